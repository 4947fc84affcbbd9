"""The simulated car behind the source seam (`carlightd.core.ports.Source`) and the workshop's
hands on it: the loop advances it and reads it; commands break, mend and start it."""

from __future__ import annotations

from collections.abc import Iterable

from carlightd.core.domain import Ignition
from carlightd.core.selftests import ReadOutcome
from carlightd.sources.simulated.car import Car
from carlightd.sources.simulated.readout import SimulatedSensorBus


class SimulatedSource:
    def __init__(self, car: Car) -> None:
        self.car = car
        self._bus = SimulatedSensorBus(car)

    def replace_car(self, car: Car) -> None:
        """A new car between two cycles (a reload changed its parts); the key stays where it is."""
        self.car = car
        self._bus = SimulatedSensorBus(car)

    # --- the source seam ---------------------------------------------------------------------

    @property
    def ignition(self) -> Ignition:
        return self.car.ignition

    def advance(self, dt_s: float) -> None:
        self.car.advance(dt_s)

    async def read_all(self, part_ids: Iterable[str], timeout_s: float) -> dict[str, ReadOutcome]:
        return await self._bus.read_all(part_ids, timeout_s)

    # --- the workshop's hands ----------------------------------------------------------------

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        self.car.inject(part_id, failure, intermittent)

    def repair(self, part_id: str) -> None:
        self.car.repair(part_id)

    def set_ignition(self, ignition: Ignition) -> None:
        self.car.set_ignition(ignition)
