"""`carlightd fleet`: many simulated cars at once, for load-testing a broker and the dashboards
above it. Each car is a full daemon — its own seed, vehicle id, MQTT connection and the whole
contract — and parts break and heal at a configurable rate. Cars can be sharded over processes
to use every core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carlightd import logs
from carlightd.app.daemon import Service
from carlightd.app.systemd import Notifier
from carlightd.config import Settings
from carlightd.core.kinds import FAILURES
from carlightd.runtime import signals
from carlightd.runtime.waiting import wait_any

log = logs.get("carlightd.fleet")
REPAIR_AFTER_S = 10.0
REPORT_EVERY_S = 10.0


def vehicle_settings(base: Settings, index: int) -> Settings:
    vehicle = f"{base.vehicle.id}-{index:04d}"
    return base.model_copy(
        update={
            "vehicle": base.vehicle.model_copy(update={"id": vehicle}),
            "simulation": base.simulation.model_copy(update={"seed": base.simulation.seed + index}),
            "diagnostics": base.diagnostics.model_copy(
                update={"state_dir": Path(base.diagnostics.state_dir) / "fleet" / vehicle}
            ),
            # One device per car in Home Assistant would be a lot of cars: off for fleets.
            "homeassistant": base.homeassistant.model_copy(update={"discovery": False}),
            # Every car would want the same scan-tool ports: a fleet is for the broker, off too.
            "scan_tool": base.scan_tool.model_copy(
                update={"doip": False, "elm327": False, "elm327_pty": False, "isotp": False}
            ),
        }
    )


def _car(settings: Settings) -> Service:
    # Built with its vehicle in the log context (its lines while building name it, and no later
    # line of this task does); `Service.run` binds it again in the car's own task.
    with logs.vehicle_bound(settings.vehicle.id):
        return Service(settings, notifier=Notifier({}), heartbeat=False)


@dataclass
class FleetStats:
    vehicles: int
    seconds: float
    cycles: int
    overruns: int
    published: int
    events: int

    @property
    def msgs_per_s(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "msgs_per_s": round(self.msgs_per_s, 1)}


async def _chaos(
    services: list[Service], rate_per_s: float, stop: asyncio.Event, seed: int
) -> None:
    """Break a random part of a random car `rate_per_s` times a second; mend it later."""
    rng = random.Random(seed)
    repairs: list[tuple[float, Service, str]] = []
    while not stop.is_set() and rate_per_s > 0:
        await wait_any(stop, timeout_s=rng.expovariate(rate_per_s))
        now = time.monotonic()
        service = rng.choice(services)
        car = service.daemon.car
        part = rng.choice(sorted(car.parts))
        car.inject(part, rng.choice(FAILURES[car.kinds[part]]))
        repairs.append((now + REPAIR_AFTER_S, service, part))
        due = [r for r in repairs if r[0] <= now]
        repairs = [r for r in repairs if r[0] > now]
        for _, old, old_part in due:
            old.daemon.car.repair(old_part)


async def run_shard(
    base: Settings,
    indices: list[int],
    *,
    seconds: float | None,
    fault_rate: float,
    stop: asyncio.Event | None = None,
    warmup_s: float = 0.0,
) -> FleetStats:
    """Run these cars until `stop` or for `seconds`; statistics exclude the warm-up."""
    stop = stop or asyncio.Event()
    services = [_car(vehicle_settings(base, i)) for i in indices]
    started = time.monotonic()
    baseline: dict[str, int] = {}

    def totals() -> dict[str, int]:
        return {
            "cycles": sum(s.daemon.diagnoser.cycle for s in services),
            "overruns": sum(s.daemon.runner.overruns for s in services),
            "published": sum(s.publisher.published for s in services),
            "events": sum(s.daemon.diagnoser.memory.seq for s in services),
        }

    async def clock() -> None:
        nonlocal baseline
        await wait_any(stop, timeout_s=warmup_s)
        baseline = totals()
        if seconds is not None:
            await wait_any(stop, timeout_s=seconds)
            stop.set()

    async def report() -> None:
        while not stop.is_set():
            await wait_any(stop, timeout_s=REPORT_EVERY_S)
            log.info("fleet", vehicles=len(services), **totals())

    measured_from = started
    async with asyncio.TaskGroup() as group:
        for service in services:
            group.create_task(service.run(), name=f"car:{service.settings.vehicle.id}")
        group.create_task(_chaos(services, fault_rate, stop, seed=indices[0] if indices else 0))
        group.create_task(clock())
        group.create_task(report())
        await stop.wait()
        measured_from = started + warmup_s
        end = totals()
        for service in services:
            service.stop.set()
    elapsed = time.monotonic() - measured_from
    return FleetStats(
        vehicles=len(services),
        seconds=round(elapsed, 2),
        **{key: end[key] - baseline.get(key, 0) for key in end},
    )


@dataclass(frozen=True)
class ShardJob:
    """What a worker process needs; it loads the configuration itself (secrets never travel)."""

    config_path: str | None
    indices: list[int]
    seconds: float | None
    fault_rate: float
    warmup_s: float


def _shard_process(job: ShardJob, results: Any) -> None:
    from carlightd import config  # noqa: PLC0415 - in the fresh process

    logs.configure(level="WARNING")
    base = config.load(Path(job.config_path) if job.config_path else None)
    stats = asyncio.run(
        _until_signalled(base, job.indices, job.seconds, job.fault_rate, job.warmup_s)
    )
    results.put(stats.as_dict())


async def _until_signalled(
    base: Settings, indices: list[int], seconds: float | None, fault_rate: float, warmup_s: float
) -> FleetStats:
    """One shard in this process, stopped by SIGTERM or SIGINT (or after `seconds`)."""
    stop = asyncio.Event()
    with signals.stopping(stop.set):
        return await run_shard(
            base, indices, seconds=seconds, fault_rate=fault_rate, stop=stop, warmup_s=warmup_s
        )


def run_fleet(
    base: Settings,
    vehicles: int,
    processes: int = 1,
    *,
    config_path: Path | None = None,
    seconds: float | None = None,
    fault_rate: float = 0.1,
    warmup_s: float = 0.0,
) -> FleetStats:
    """Shard `vehicles` cars over `processes` processes (one: this one) and add up their figures.

    Worker processes read the configuration from `config_path` and the environment, as the
    parent did; only one process runs in this one.
    """
    if processes <= 1:
        return asyncio.run(
            _until_signalled(base, list(range(vehicles)), seconds, fault_rate, warmup_s)
        )
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    shards = [list(range(vehicles))[p::processes] for p in range(processes)]
    path = str(config_path) if config_path else None
    workers = [
        context.Process(
            target=_shard_process,
            args=(ShardJob(path, shard, seconds, fault_rate / processes, warmup_s), results),
            name=f"carlightd-fleet-{p}",
        )
        for p, shard in enumerate(shards)
        if shard
    ]
    for worker in workers:
        worker.start()
    try:
        collected = [results.get() for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
    return FleetStats(
        vehicles=sum(r["vehicles"] for r in collected),
        seconds=max(r["seconds"] for r in collected),
        cycles=sum(r["cycles"] for r in collected),
        overruns=sum(r["overruns"] for r in collected),
        published=sum(r["published"] for r in collected),
        events=sum(r["events"] for r in collected),
    )
