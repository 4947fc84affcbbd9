"""The simulated ground point: the lamps its configuration lists (`serves`) return through it.

Its configuration, reading, failure and self-test are in `carlightd.core.kinds.ground`; this is
the part the simulated car is built from. A sound ground point is a few milliohms, nothing next to
a lamp, and is modelled as none. Corroded or loose (`high_resistance`) it adds
`HIGH_RESISTANCE_OHM` in series with each lamp it serves (`wiring.Feed`): a filament then draws
V / (R_lamp + R_ground); an LED driver keeps its current while the supply left after the ground's
drop is above its drop-out, and draws nothing below.

Simplification: each lamp's current is worked out as if it were alone on the ground point; the
drop the other lamps' currents cause across a shared stud is left out (it would make every lamp's
current depend on which others are on).
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.ground import GroundConfig, GroundReading
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.sensors import Noise

# A corroded or loose lamp ground: chosen (not measured) as a fault a driver sees, every filament
# of the default car between about 37 % (60 W, 2.9 ohm) and 69 % (16 W, 10.9 ohm) of its current.
# A sound ground connection drops well under 0.1 V under load, i.e. milliohms.
HIGH_RESISTANCE_OHM = 5.0


class Ground(SimulatedPart[GroundConfig, GroundReading]):
    kind = Kind.GROUND

    @property
    def added_ohm(self) -> float:
        return HIGH_RESISTANCE_OHM if self.has("high_resistance") else 0.0

    def measure(self, car: CarView, noise: Noise) -> GroundReading:
        # Nothing senses a ground point: the controller reports only its own supply beside it.
        return GroundReading(noise.voltage(car.bus.voltage_v))
