"""What every simulated part is: a configured part that can break, be repaired, draw from the bus
and carry out its test step. The car (`car.py`) holds the parts and the bus; each part knows only
itself and what it sees of the car while it is measured (`CarView`).

A part holds a set of failures (DESIGN §2): injecting one never mends another, and `repair` mends
them all. Each held failure is standing (present in every cycle) or intermittent with a presence
p: at every cycle (`roll`) it is present with probability p, drawn from the part's own
intermittency stream (see `intermittency_rng`), so the part behaves as if only its `present`
failures were there. Where two failures of one part interact, each kind's module says what wins.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import PartConfig
from carlightd.sources.simulated.electrical import BusState
from carlightd.sources.simulated.profile import DriverInputs
from carlightd.sources.simulated.sensors import Noise

ConfigT = TypeVar("ConfigT", bound=PartConfig)
ReadingT = TypeVar("ReadingT", bound=Reading)

# (siemens of filament, amperes of constant-current drivers) a part draws from the bus.
Draw = tuple[float, float]
NO_DRAW: Draw = (0.0, 0.0)


def check_intermittent(intermittent: float | None) -> None:
    """ValueError naming `intermittent` unless it is None or a presence strictly between 0 and 1."""
    if intermittent is None:
        return
    if isinstance(intermittent, bool) or not isinstance(intermittent, int | float):
        raise ValueError(f"intermittent: must be a number, not {type(intermittent).__name__}")
    if not (math.isfinite(intermittent) and 0.0 < intermittent < 1.0):
        raise ValueError(
            f"intermittent: must be strictly between 0 and 1 (a presence), not {intermittent!r}"
        )


def intermittency_rng(seed: int, part_id: str) -> random.Random:
    """The stream that decides, cycle by cycle, whether a part's intermittent failures are present:
    one per part, seeded from (seed, part id) as a string (hashed by SHA-512, so the same in every
    process), apart from the noise stream (`sensors.part_rng`) so that an intermittent failure
    does not change the noise the part's readings carry. One draw per intermittent failure per
    cycle, in the failures' alphabetical order."""
    return random.Random(f"intermittent:{seed}:{part_id}")


def spread_rng(seed: int, part_id: str) -> random.Random:
    """The stream a part's own deviation from nominal is drawn from, once, when the car is built
    (`SimulatedPart.manufacture`): one per part, apart from the noise and intermittency streams."""
    return random.Random(f"spread:{seed}:{part_id}")


class CarView(Protocol):
    """The car around a part while the part's test step runs."""

    @property
    def time_s(self) -> float: ...

    @property
    def ignition(self) -> Ignition: ...

    @property
    def engine_running(self) -> bool: ...

    @property
    def cranking(self) -> bool:
        """The starter is turning the engine now."""
        ...

    @property
    def since_crank_s(self) -> float | None:
        """Seconds since the starter last stopped; None: no start since the car was built."""
        ...

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
        # The failures it holds: None for a standing one, else its presence p (0 < p < 1).
        self.held: dict[str, float | None] = {}
        self.present: frozenset[str] = frozenset()  # those acting in this cycle
        self._sensor_fault = ""  # the pattern a broken sensor follows
        self._stuck: ReadingT | None = None  # what a broken sensor read when it broke

    @property
    def silent(self) -> bool:
        """It no longer answers, nor for the parts it measures."""
        return False

    def manufacture(self, rng: random.Random) -> None:
        """The car is built: a part that differs from its nominal values draws how, once."""

    def has(self, failure: str) -> bool:
        """Whether `failure` acts on the part in this cycle."""
        return failure in self.present

    def inject(
        self, failure: str, intermittent: float | None = None, *, present: bool = True
    ) -> None:
        """Hold `failure` besides the others (injected again: its presence is updated). An
        intermittent one is `present` in this cycle or not as the car drew it."""
        check_intermittent(intermittent)
        self.held[failure] = intermittent
        self._set_present(self.present | {failure} if present else self.present - {failure})

    def repair(self) -> None:
        """A new part: every failure mended."""
        self.held = {}
        self._sensor_fault = ""
        self._stuck = None
        self._set_present(frozenset())

    def roll(self, rng: random.Random) -> None:
        """A new cycle: each intermittent failure is drawn present (probability p) or absent."""
        if all(p is None for p in self.held.values()):  # most parts, most cycles: nothing to draw
            return
        present = {f for f, p in self.held.items() if p is None}
        for failure, presence in sorted(self.held.items()):
            if presence is not None and rng.random() < presence:
                present.add(failure)
        self._set_present(frozenset(present))

    def _set_present(self, present: frozenset[str]) -> None:
        if present != self.present:
            self.present = present
            self.changed()

    def changed(self) -> None:
        """The failures acting on it changed: a part that works out its draw once does it again."""

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
        if self.has(SENSOR_FAULT):
            # Read as if working first, so that the noise stream advances the same either way.
            return self.broken(self.measure(car, noise), self._sensor_fault, noise)
        return self.measure(car, noise)

    def broken(self, true: ReadingT, pattern: str, noise: Noise) -> ReadingT:
        """What its broken sensor reports instead of `true`."""
        return true
