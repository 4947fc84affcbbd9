"""A health signal outside the process: the loop writes a heartbeat file every cycle, and
`carlightd health` (a Docker HEALTHCHECK, a monitoring probe) judges how fresh it is, and whether
the daemon could save its state.

The heartbeat is a fixed-size file (JSON padded with spaces) overwritten in place: once it exists,
writing it needs no new disk space, so it goes on working on a full disk and can say so. A disk that
is read-only (or gone) stops it; a stale heartbeat is therefore not proof of a stuck loop, and the
verdict says what it can find out about the disk instead of guessing.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carlightd.errors import CarlightdError
from carlightd.store.state import describe_error, printable

HEARTBEAT_FILE = "heartbeat.json"
# Stale after this many cycles without a heartbeat (and never sooner than MIN_STALE_S).
STALE_CYCLES = 5
MIN_STALE_S = 10.0
# Every heartbeat is exactly this long: one page, so an overwrite is one page and never grows.
SIZE = 4096
# A read that races a write may see half of each: read again, a few times, before calling it broken.
READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Heartbeat:
    at: datetime
    cycle: int
    cycle_s: float
    mqtt_connected: bool
    faults: int
    state_problem: str | None = None  # why the fault memory is not saved (None: it is)


def encode(beat: Heartbeat) -> bytes:
    fields: dict[str, Any] = {
        "at": beat.at.isoformat(),
        "cycle": beat.cycle,
        "cycle_s": beat.cycle_s,
        "mqtt_connected": beat.mqtt_connected,
        "faults": beat.faults,
        "state_problem": beat.state_problem,
    }
    data = json.dumps(fields).encode()
    if len(data) > SIZE and beat.state_problem:  # only an absurdly long path does this
        # The longest start of the problem that fits (escaping makes bytes and characters differ).
        problem, fits, too_long = beat.state_problem, 0, len(beat.state_problem)
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            fields["state_problem"] = problem[:middle] + "…"
            if len(json.dumps(fields).encode()) <= SIZE:
                fits = middle
            else:
                too_long = middle
        fields["state_problem"] = problem[:fits] + "…"
        data = json.dumps(fields).encode()
    return data.ljust(SIZE)


def write(state_dir: Path, beat: Heartbeat) -> None:
    """Overwrite the heartbeat in place (no fsync: a heartbeat lost in a power cut is no loss)."""
    path = state_dir / HEARTBEAT_FILE
    data = encode(beat)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o644)
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    try:
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{printable(path)} is not a regular file")
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)) :]
        if info.st_size > SIZE:  # a longer file from an older version
            os.ftruncate(fd, SIZE)
    except OSError:
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            # Just made, on a full disk: no heartbeat rather than a broken one.
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        os.close(fd)


class Unhealthy(CarlightdError):
    pass


def read(path: Path) -> Heartbeat:
    """The heartbeat in `path`; raises OSError or ValueError (KeyError, TypeError) if broken."""
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _parse(path.read_bytes())
        except (ValueError, KeyError, TypeError, AttributeError):
            time.sleep(0.05)
    return _parse(path.read_bytes())


def _parse(raw: bytes) -> Heartbeat:
    data = json.loads(raw)
    problem = data.get("state_problem")
    return Heartbeat(
        at=datetime.fromisoformat(data["at"]),
        cycle=int(data["cycle"]),
        cycle_s=float(data["cycle_s"]),
        mqtt_connected=bool(data["mqtt_connected"]),
        faults=int(data["faults"]),
        state_problem=None if problem is None else str(problem),
    )


def disk_trouble(state_dir: Path) -> str | None:
    """What the file system says about the state directory, if it explains a missing heartbeat."""
    try:
        disk = os.statvfs(state_dir)
    except OSError as error:
        return f"the state directory {printable(state_dir)} is unusable: {describe_error(error)}"
    if disk.f_flag & os.ST_RDONLY:
        return f"the state directory {printable(state_dir)} is on a read-only file system"
    if disk.f_bavail == 0:
        return f"the file system of the state directory {printable(state_dir)} is full"
    return None


def check(state_dir: Path, now: datetime | None = None) -> str:
    """A one-line verdict; raises Unhealthy saying why."""
    path = state_dir / HEARTBEAT_FILE
    try:
        beat = read(path)
    except FileNotFoundError:
        trouble = disk_trouble(state_dir)
        cause = (
            f"{trouble}, so the daemon cannot write one"
            if trouble
            else "the daemon has not completed a cycle, or cannot write to its state directory"
        )
        raise Unhealthy(f"no heartbeat at {printable(path)}: {cause}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise Unhealthy(f"unreadable heartbeat {printable(path)}: {error}") from None
    age = ((now or datetime.now(UTC)) - beat.at).total_seconds()
    limit = max(MIN_STALE_S, STALE_CYCLES * beat.cycle_s)
    if age > limit:
        trouble = disk_trouble(state_dir)
        cause = (
            f"{trouble}, so the daemon cannot update its heartbeat (its loop may still run)"
            if trouble
            else "the loop is stuck or the state directory is not writable"
        )
        raise Unhealthy(f"heartbeat is {age:.0f} s old (limit {limit:.0f} s): {cause}")
    if beat.state_problem:
        raise Unhealthy(f"state not saved: {beat.state_problem}")
    mqtt = "connected" if beat.mqtt_connected else "NOT connected (retrying)"
    return f"healthy: cycle {beat.cycle} {age:.1f} s ago, {beat.faults} faults, MQTT {mqtt}"
