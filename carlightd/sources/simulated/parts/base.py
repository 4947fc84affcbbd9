"""What every simulated part is: a configured part that can break, be repaired, draw from the bus
and carry out its test step. The car (`car.py`) holds the parts and the bus; each part knows only
itself and what it sees of the car while it is measured (`CarView`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from carlightd.core.domain import SENSOR_FAULT, Kind, Reading
from carlightd.core.kinds.spec import PartConfig
from carlightd.sources.simulated.electrical import BusState
from carlightd.sources.simulated.profile import DriverInputs
from carlightd.sources.simulated.sensors import Noise

ConfigT = TypeVar("ConfigT", bound=PartConfig)
ReadingT = TypeVar("ReadingT", bound=Reading)

# (siemens of filament, amperes of constant-current drivers) a part draws from the bus.
Draw = tuple[float, float]
NO_DRAW: Draw = (0.0, 0.0)


class CarView(Protocol):
    """The car around a part while the part's test step runs."""

    @property
    def bus(self) -> BusState: ...

    @property
    def inputs(self) -> DriverInputs: ...

    def solve(self, *, field_off: bool = False, extra_a: float = 0.0) -> BusState:
        """The bus as it would be with the alternator's field off and/or a test load added."""
        ...


class SimulatedPart(ABC, Generic[ConfigT, ReadingT]):
    kind: ClassVar[Kind]
    # What the part's sensor may report once broken; one is picked (seeded) when it breaks.
    SENSOR_FAULTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.failure: str | None = None
        self._sensor_fault = ""  # the pattern a broken sensor follows
        self._stuck: ReadingT | None = None  # what a broken sensor read when it broke

    @property
    def silent(self) -> bool:
        """It no longer answers, nor for the parts it measures."""
        return False

    def inject(self, failure: str) -> None:
        self.failure = failure

    def repair(self) -> None:
        self.failure = None
        self._sensor_fault = ""
        self._stuck = None

    def draw(self, inputs: DriverInputs) -> Draw:
        """What it takes from the bus now, besides the car's steady loads."""
        return NO_DRAW

    @abstractmethod
    def measure(self, car: CarView, noise: Noise) -> ReadingT:
        """Its test step and what its working sensors report."""

    def break_sensor(self, car: CarView, noise: Noise) -> None:
        """Its sensor breaks now: what it reads is frozen, and how it is broken is picked."""
        if not self.SENSOR_FAULTS:
            raise ValueError(f"a {self.kind} has no sensor to break")
        self._stuck = self.measure(car, noise)
        self._sensor_fault = noise.rng.choice(self.SENSOR_FAULTS)

    def reading(self, car: CarView, noise: Noise) -> ReadingT:
        """What the car reads from this part: its sensors, working or broken."""
        if self.failure == SENSOR_FAULT:
            # Read as if working first, so that the noise stream advances the same either way.
            return self.broken(self.measure(car, noise), self._sensor_fault, noise)
        return self.measure(car, noise)

    def broken(self, true: ReadingT, pattern: str, noise: Noise) -> ReadingT:
        """What its broken sensor reports instead of `true`."""
        return true
