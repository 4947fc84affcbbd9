"""The simulated fuse: it feeds the lamp circuits its configuration lists (`feeds`).

Its configuration, reading, failure and self-test are in `carlightd.core.kinds.fuse`; this is the
part the simulated car is built from. A fuse has no resistance worth modelling (a blade fuse
drops tens of millivolts at its rating); blown, it opens every circuit it feeds: those lamps draw
nothing, light nothing and read no current, pulsed or on (`wiring.Feed`). Its rating is the
configured one and is not simulated: the lamps' high-side drivers trip on a short long before a
lamp circuit's fuse would blow, so in this car a fuse blows only when it is injected.
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.fuse import FuseConfig, FuseReading
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.sensors import Noise


class Fuse(SimulatedPart[FuseConfig, FuseReading]):
    kind = Kind.FUSE

    @property
    def blown(self) -> bool:
        return self.has("blown")

    def measure(self, car: CarView, noise: Noise) -> FuseReading:
        # Nothing senses a fuse: the controller reports only its own supply beside it.
        return FuseReading(noise.voltage(car.bus.voltage_v))
