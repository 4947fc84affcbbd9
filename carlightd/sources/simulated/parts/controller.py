"""The simulated body controller: it switches and measures the lamps, and answers a ping.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.controller`; this
is the part the simulated car is built from, which the core never imports (it lives with its
source).
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.controller import ControllerConfig, ControllerReading
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.sensors import Noise


class Controller(SimulatedPart[ControllerConfig, ControllerReading]):
    kind = Kind.CONTROLLER

    @property
    def silent(self) -> bool:
        return self.has("no_response")

    def measure(self, car: CarView, noise: Noise) -> ControllerReading:
        return ControllerReading(noise.voltage(car.bus.voltage_v))
