"""Soak benchmark (not a test): the daemon at a 10 ms cycle for 10 minutes, against the broker at
127.0.0.1:1883, with parts breaking and mending all along. Memory must stay flat.

    .venv/bin/python bench/soak.py [--minutes 10] [--cycle-s 0.01]

Prints a status line every 30 s and writes bench/soak.json: RSS samples, cycles, overruns, events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import tempfile
import time
import uuid
from pathlib import Path

from carlightd import config, logs
from carlightd.app.daemon import Service

PARTS = ["brake_left", "alternator", "tail_right", "battery", "reverse", "headlamp_left"]
FAILURES = {"alternator": "diode_failure", "battery": "weak"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def soak(minutes: float, cycle_s: float) -> dict[str, object]:
    logs.configure(json=True, level="ERROR")
    with tempfile.TemporaryDirectory(prefix="carlightd-soak-") as state_dir:
        base = config.load()
        settings = base.model_copy(
            update={
                "mqtt": base.mqtt.model_copy(update={"base_topic": f"soak-{uuid.uuid4().hex[:8]}"}),
                "diagnostics": base.diagnostics.model_copy(
                    update={
                        "cycle_s": cycle_s,
                        "read_timeout_s": cycle_s / 2,
                        "telemetry_s": 1.0,
                        "state_dir": Path(state_dir),
                    }
                ),
            }
        )
        service = Service(settings)
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        end = start + minutes * 60

        async def chaos() -> None:
            car = service.daemon.car
            index = 0
            while time.monotonic() < end:
                part = PARTS[index % len(PARTS)]
                car.inject(part, FAILURES.get(part, "open_circuit"))
                await asyncio.sleep(2.0)
                car.repair(part)
                await asyncio.sleep(1.0)
                index += 1

        async def sample() -> None:
            last_print = start
            while time.monotonic() < end:
                now = time.monotonic()
                samples.append((round(now - start, 1), round(rss_mb(), 2)))
                if now - last_print >= 30:
                    last_print = now
                    print(
                        f"soak {now - start:6.0f} s  rss {rss_mb():6.1f} MB  "
                        f"cycles {service.daemon.diagnoser.cycle}  "
                        f"overruns {service.daemon.runner.overruns}  "
                        f"events {service.daemon.diagnoser.memory.seq}",
                        flush=True,
                    )
                await asyncio.sleep(5.0)
            service.stop.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(service.run())
            group.create_task(chaos())
            group.create_task(sample())

    settled = [rss for t, rss in samples if t >= 60.0] or [rss for _, rss in samples]
    result: dict[str, object] = {
        "minutes": minutes,
        "cycle_s": cycle_s,
        "cycles": service.daemon.diagnoser.cycle,
        "overruns": service.daemon.runner.overruns,
        "events": service.daemon.diagnoser.memory.seq,
        "rss_mb_after_1_min": settled[0],
        "rss_mb_at_end": settled[-1],
        "rss_mb_max": max(settled),
        "rss_growth_mb": round(settled[-1] - settled[0], 2),
        "samples": samples,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cycle-s", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("soak.json"))
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(soak(args.minutes, args.cycle_s))
        args.out.write_text(json.dumps(result, indent=2))
        summary = {k: v for k, v in result.items() if k != "samples"}
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
