"""A health signal outside the process: the loop writes a heartbeat file every cycle, and
`carlightd health` (a Docker HEALTHCHECK, a monitoring probe) judges how fresh it is."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HEARTBEAT_FILE = "heartbeat.json"
# Stale after this many cycles without a heartbeat (and never sooner than MIN_STALE_S).
STALE_CYCLES = 5
MIN_STALE_S = 10.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    at: datetime
    cycle: int
    cycle_s: float
    mqtt_connected: bool
    faults: int


def write(state_dir: Path, beat: Heartbeat) -> None:
    """Replace the heartbeat file (rename, so a reader never sees half of it; no fsync needed)."""
    path = state_dir / HEARTBEAT_FILE
    tmp = path.with_name(f".{HEARTBEAT_FILE}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "at": beat.at.isoformat(),
                "cycle": beat.cycle,
                "cycle_s": beat.cycle_s,
                "mqtt_connected": beat.mqtt_connected,
                "faults": beat.faults,
            }
        ),
        encoding="utf-8",
    )
    os.replace(tmp, path)


class Unhealthy(Exception):
    pass


def check(state_dir: Path, now: datetime | None = None) -> str:
    """A one-line verdict; raises Unhealthy saying why."""
    path = state_dir / HEARTBEAT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        beat = Heartbeat(
            at=datetime.fromisoformat(data["at"]),
            cycle=int(data["cycle"]),
            cycle_s=float(data["cycle_s"]),
            mqtt_connected=bool(data["mqtt_connected"]),
            faults=int(data["faults"]),
        )
    except FileNotFoundError:
        raise Unhealthy(f"no heartbeat at {path}: the daemon has not completed a cycle") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Unhealthy(f"unreadable heartbeat {path}: {error}") from None
    age = ((now or datetime.now(UTC)) - beat.at).total_seconds()
    limit = max(MIN_STALE_S, STALE_CYCLES * beat.cycle_s)
    if age > limit:
        raise Unhealthy(f"last cycle {age:.1f} s ago (limit {limit:.0f} s): the loop is stuck")
    mqtt = "connected" if beat.mqtt_connected else "NOT connected (retrying)"
    return f"healthy: cycle {beat.cycle} {age:.1f} s ago, {beat.faults} faults, MQTT {mqtt}"
