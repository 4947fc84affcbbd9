"""The simulated alternator: a claw-pole alternator with its voltage regulator.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.alternator`; this
is the part the simulated car is built from, which the core never imports (it lives with its
source).

Several failures at once: `no_output` (belt or rotor) gives no current whatever else is wrong;
`overcharging` (the regulator lost control of the field, which stays full on) wins over
`undercharging` (a set-point drifted low), since a full field ignores the set-point; a lost phase
(`diode_failure`) cuts the capacity and adds ripple on top of either regulator failure. A broken
sensor (`sensor_fault`) changes only what the regulator reports.

Smart charging (`commanded_setpoint`): the engine computer commands the regulator's set-point over
LIN, as modern cars do to save fuel and keep the battery in its best charge window:
- boost, the configured set-point + `BOOST_V` (0.4 V), for `BOOST_AFTER_START_S` (2 min) after a
  start (to put back the cranking charge) and while the charge is below `BOOST_BELOW_SOC` (80 %);
- low, `SMART_LOW_V` (12.8 V, about the open-circuit voltage of a full battery: it barely
  charges, so the alternator's torque is saved) once the charge is at least `LOW_FROM_SOC` (95 %);
- otherwise the configured set-point;
- temperature compensated around 25 °C by `COMPENSATION_V_PER_K_CELL` (-3 mV/K per cell, x 6
  cells: -18 mV/K): "the charge temperature coefficient of a lead acid cell is -3 mV/°C",
  25 °C the midpoint (Battery University, BU-403 "Charging Lead Acid"; makers give -3 to
  -5 mV/K per cell), then held within `SMART_RANGE_V` (12.8-15.0 V).
The regulator's failures act on the commanded set-point (drifted low by 1.2 V, or the field full
on, +1.6 V); the set-point it reports (`setpoint_v`) is the commanded one.
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.alternator import AlternatorConfig, AlternatorReading
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.profile import IDLE_RPM
from carlightd.sources.simulated.sensors import Noise

FULL_OUTPUT_RPM = 3000.0
SMART_LOW_V = 12.8
SMART_RANGE_V = (12.8, 15.0)
BOOST_V = 0.4
BOOST_AFTER_START_S = 120.0
BOOST_BELOW_SOC = 0.80
LOW_FROM_SOC = 0.95
COMPENSATION_REFERENCE_C = 25.0
COMPENSATION_V_PER_K_CELL = -0.003
CELLS = 6
IDLE_OUTPUT_FRACTION = 0.45
MIN_TURNING_RPM = 400.0


def commanded_setpoint(
    configured_v: float, soc: float, temperature_c: float, since_start_s: float | None
) -> float:
    """The set-point the engine computer commands (smart charging, see the module's text)."""
    if soc < BOOST_BELOW_SOC or (since_start_s is not None and since_start_s < BOOST_AFTER_START_S):
        wanted = configured_v + BOOST_V
    elif soc >= LOW_FROM_SOC:
        wanted = SMART_LOW_V
    else:
        wanted = configured_v
    wanted += COMPENSATION_V_PER_K_CELL * CELLS * (temperature_c - COMPENSATION_REFERENCE_C)
    low, high = SMART_RANGE_V
    return min(high, max(low, wanted))


class Alternator(SimulatedPart[AlternatorConfig, AlternatorReading]):
    kind = Kind.ALTERNATOR
    # The regulator's LIN signal is lost (all zeros), or it sends "signal invalid" codes.
    SENSOR_FAULTS = ("lost", "invalid")

    def __init__(self, config: AlternatorConfig) -> None:
        super().__init__(config)
        self.commanded_v = config.setpoint_v  # the engine computer's set-point (the car sets it)

    @property
    def setpoint_v(self) -> float:
        """What the regulator really holds the bus at, given the commanded set-point."""
        if self.has("overcharging"):  # the regulator lost control of the field
            return self.commanded_v + 1.6
        if self.has("undercharging"):  # the regulator drifted low
            return self.commanded_v - 1.2
        return self.commanded_v

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
            setpoint_v=round(self.commanded_v, 3),  # a digital LIN value: no noise
            cranking=car.cranking,
            since_crank_s=car.since_crank_s,
        )

    def broken(self, true: AlternatorReading, pattern: str, noise: Noise) -> AlternatorReading:
        if pattern == "lost":
            return AlternatorReading(true.engine_rpm, 0.0, 0.0, 0.0, 0.0)
        return AlternatorReading(true.engine_rpm, 25.5, -5.0, noise.ripple(0.1), 1.27)
