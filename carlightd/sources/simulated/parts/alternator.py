"""The simulated alternator: a claw-pole alternator with its voltage regulator.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.alternator`; this
is the part the simulated car is built from, which the core never imports (it lives with its
source).

Several failures at once: `no_output` (belt or rotor) gives no current whatever else is wrong;
`overcharging` (the regulator lost control of the field, which stays full on) wins over
`undercharging` (a set-point drifted low), since a full field ignores the set-point; a lost phase
(`diode_failure`) cuts the capacity and adds ripple on top of either regulator failure. A broken
sensor (`sensor_fault`) changes only what the regulator reports.
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.alternator import AlternatorConfig, AlternatorReading
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.profile import IDLE_RPM
from carlightd.sources.simulated.sensors import Noise

FULL_OUTPUT_RPM = 3000.0
IDLE_OUTPUT_FRACTION = 0.45
MIN_TURNING_RPM = 400.0


class Alternator(SimulatedPart[AlternatorConfig, AlternatorReading]):
    kind = Kind.ALTERNATOR
    # The regulator's LIN signal is lost (all zeros), or it sends "signal invalid" codes.
    SENSOR_FAULTS = ("lost", "invalid")

    @property
    def setpoint_v(self) -> float:
        if self.has("overcharging"):  # the regulator lost control of the field
            return self.config.setpoint_v + 1.6
        if self.has("undercharging"):  # the regulator drifted low
            return self.config.setpoint_v - 1.2
        return self.config.setpoint_v

    def capacity_a(self, rpm: float) -> float:
        """The most current the alternator can give at this engine speed."""
        if rpm < MIN_TURNING_RPM or self.has("no_output"):
            return 0.0
        span = (rpm - IDLE_RPM) / (FULL_OUTPUT_RPM - IDLE_RPM)
        fraction = min(1.0, max(0.0, IDLE_OUTPUT_FRACTION + (1 - IDLE_OUTPUT_FRACTION) * span))
        capacity = self.config.rated_current_a * fraction
        if self.has("diode_failure"):  # one phase lost
            capacity *= 0.6
        return capacity

    def ripple_v(self, field_duty: float) -> float:
        if self.has("diode_failure"):
            return 0.9 + 0.8 * field_duty
        return 0.04 + 0.12 * field_duty

    def field_duty(self, rpm: float, output_a: float) -> float:
        """How hard the regulator drives the field to give `output_a` at this engine speed."""
        if rpm <= 0.0:
            return 0.0
        capacity = self.capacity_a(rpm)
        if capacity <= 0.0:
            return 1.0  # the regulator asks for everything and gets nothing
        return min(1.0, output_a / capacity) if output_a else 0.0

    def measure(self, car: CarView, noise: Noise) -> AlternatorReading:
        bus = car.bus
        rpm = car.inputs.engine_rpm
        duty = self.field_duty(rpm, bus.alternator_a)
        return AlternatorReading(
            engine_rpm=noise.rpm(rpm),
            output_v=noise.voltage(bus.voltage_v),
            output_a=noise.current(bus.alternator_a),
            ripple_v=noise.ripple(self.ripple_v(duty) if bus.alternator_a else 0.0),
            field_duty=noise.duty(duty),
        )

    def broken(self, true: AlternatorReading, pattern: str, noise: Noise) -> AlternatorReading:
        if pattern == "lost":
            return AlternatorReading(true.engine_rpm, 0.0, 0.0, 0.0, 0.0)
        return AlternatorReading(true.engine_rpm, 25.5, -5.0, noise.ripple(0.1), 1.27)
