"""A car on the workbench: the simulated car and the pure core, driven one cycle at a time with a
fake wall clock — no event loop, no broker, no files. The tests and the benchmarks drive the core
with it (`bench/` imports nothing from `tests/`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from carlightd import config
from carlightd.core.diagnoser import CycleReport, Diagnoser
from carlightd.core.domain import Ignition
from carlightd.core.memory import FaultMemory
from carlightd.core.selftests import NO_READING, ReadOutcome
from carlightd.sources.simulated.car import Car, NoResponseError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def settings(**overrides: object) -> config.Settings:
    """The packaged default car, with `section__field=value` overrides."""
    base = config.load(config.packaged_default())
    raw = base.model_dump(mode="python")
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        raw[section][field] = value
    return config.Settings(**raw)


def read_now(car: Car) -> dict[str, ReadOutcome]:
    """Every part measured now, as the loop would (a controller that does not answer: none)."""
    readings: dict[str, ReadOutcome] = {}
    for part_id in car.parts:
        try:
            readings[part_id] = car.measure(part_id)
        except NoResponseError:
            readings[part_id] = NO_READING
    return readings


class Bench:
    """A car on the workbench, diagnosed one cycle at a time with a fake wall clock."""

    def __init__(
        self,
        *,
        seed: int = 1,
        noise: float = 1.0,
        ignition: Ignition = Ignition.RUN,
        profile: Literal["drive", "steady"] = "drive",
        settings_: config.Settings | None = None,
    ) -> None:
        self.settings = settings_ or settings()
        self.car = Car(
            self.settings.components, seed=seed, noise=noise, ignition=ignition, profile=profile
        )
        diagnostics = self.settings.diagnostics
        self.memory = FaultMemory(
            diagnostics.confirm_cycles,
            diagnostics.heal_cycles,
            aging_cycles=diagnostics.aging_cycles,
        )
        self.diagnoser = Diagnoser(self.settings.components, self.memory)
        self.now = T0

    def cycle(self, dt_s: float = 1.0) -> CycleReport:
        self.car.advance(dt_s)
        self.now += timedelta(seconds=dt_s)
        return self.diagnoser.diagnose(self.car.ignition, read_now(self.car), self.now)

    def run(self, cycles: int, dt_s: float = 1.0) -> CycleReport:
        report = self.cycle(dt_s)
        for _ in range(cycles - 1):
            report = self.cycle(dt_s)
        return report
