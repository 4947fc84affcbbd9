"""The simulated car: its parts, its bus, its driver, and the measurements the diagnostics ask for.

`Car.measure(part)` is the self-test's *test step* carried out on the car: it stimulates the part
the way a real controller would (a pulse on a switched-off lamp, a load pulse on the battery with
the alternator's field off, a ping to the controller) and returns what the sensors saw, noise and
broken sensors included. Judging the measurement is the diagnostics' job, not the car's.
"""

from __future__ import annotations

from dataclasses import dataclass

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds import PartConfig, check_failure
from carlightd.core.kinds.alternator import AlternatorConfig, AlternatorReading
from carlightd.core.kinds.battery import BATTERY_TEST_PULSE_A, BatteryConfig, BatteryReading
from carlightd.core.kinds.controller import ControllerConfig, ControllerReading
from carlightd.core.kinds.lamp import LampConfig, LampReading
from carlightd.errors import CarlightdError, UnknownPartError
from carlightd.sources.simulated.electrical import (
    SHORT_CIRCUIT_LIMIT_A,
    Alternator,
    Battery,
    BusState,
    Lamp,
    Loads,
    solve_bus,
)
from carlightd.sources.simulated.profile import DriverInputs, ProfileName, driver_inputs
from carlightd.sources.simulated.sensors import (
    ALTERNATOR_SENSOR_FAULTS,
    BATTERY_SENSOR_FAULTS,
    LAMP_SENSE_FAULTS,
    Noise,
    part_rng,
)

# Steady loads besides lamps: sleeping electronics; ECUs and pumps with the key on; plus ignition,
# fuel pump and fans with the engine running.
BASE_LOAD_A = {Ignition.OFF: 0.03, Ignition.ON: 6.0, Ignition.RUN: 18.0}
BATTERY_TEMPERATURE_C = 20.0


class NoResponseError(CarlightdError):
    """The controller that would take this measurement did not answer."""

    def __init__(self, part_id: str, controller_id: str) -> None:
        super().__init__(f"{controller_id} did not answer for {part_id}")
        self.part_id = part_id
        self.controller_id = controller_id


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.failure: str | None = None

    def inject(self, failure: str) -> None:
        self.failure = failure

    def repair(self) -> None:
        self.failure = None


Part = Lamp | Battery | Alternator | Controller


def _build(config: PartConfig) -> Part:
    match config:
        case LampConfig():
            return Lamp(config)
        case BatteryConfig():
            return Battery(config)
        case AlternatorConfig():
            return Alternator(config)
        case ControllerConfig():
            return Controller(config)
    raise TypeError(f"{config.id}: no simulated part for a {config.kind}")


@dataclass(frozen=True, slots=True)
class CarSnapshot:
    """The true state, for logs and tests; the diagnostics never see it."""

    time_s: float
    ignition: Ignition
    engine_rpm: float
    bus_v: float
    battery_soc: float
    alternator_a: float
    lamps_on: frozenset[str]


class Car:
    def __init__(
        self,
        components: list[PartConfig],
        *,
        seed: int,
        noise: float,
        ignition: Ignition,
        profile: ProfileName = "drive",
    ) -> None:
        self.parts: dict[str, Part] = {c.id: _build(c) for c in components}
        self.kinds: dict[str, Kind] = {c.id: Kind(c.kind) for c in components}
        self._noise = {c.id: Noise(part_rng(seed, c.id), noise) for c in components}
        self._sensor_fault_pattern: dict[str, str] = {}
        self._stuck_reading: dict[str, Reading] = {}
        self.battery = next(p for p in self.parts.values() if isinstance(p, Battery))
        self.alternator = next(p for p in self.parts.values() if isinstance(p, Alternator))
        self.lamps = {pid: p for pid, p in self.parts.items() if isinstance(p, Lamp)}
        self._answered_by: dict[str, Part] = {
            pid: self.parts[lamp.config.controller]
            for pid, lamp in self.lamps.items()
            if lamp.config.controller in self.parts
        }
        self.profile: ProfileName = profile
        self.ignition = ignition
        self.time_s = 0.0
        self._inputs = driver_inputs(profile, 0.0, ignition)
        self._loads = Loads(0.0, 0.0, 0.0)
        self._bus = self._solve()

    # --- driver and workshop -------------------------------------------------------------------

    def set_ignition(self, ignition: Ignition) -> None:
        self.ignition = ignition
        self._inputs = driver_inputs(self.profile, self.time_s, ignition)
        self._bus = self._solve()

    def set_noise(self, scale: float) -> None:
        for noise in self._noise.values():
            noise.scale = scale

    def part(self, part_id: str) -> Part:
        try:
            return self.parts[part_id]
        except KeyError:
            raise UnknownPartError(part_id, sorted(self.parts)) from None

    def inject(self, part_id: str, failure: str) -> None:
        """Break a part; raises UnknownPartError or UnknownFailureError for nonsense."""
        part = self.part(part_id)
        check_failure(self.kinds[part_id], failure)
        if failure == SENSOR_FAULT:
            patterns = {
                Kind.LAMP: LAMP_SENSE_FAULTS,
                Kind.BATTERY: BATTERY_SENSOR_FAULTS,
                Kind.ALTERNATOR: ALTERNATOR_SENSOR_FAULTS,
            }[self.kinds[part_id]]
            self._stuck_reading[part_id] = self._measure_true(part_id)
            self._sensor_fault_pattern[part_id] = self._noise[part_id].rng.choice(patterns)
        part.inject(failure)
        self._bus = self._solve()

    def repair(self, part_id: str) -> None:
        self.part(part_id).repair()
        self._sensor_fault_pattern.pop(part_id, None)
        self._stuck_reading.pop(part_id, None)
        self._bus = self._solve()

    def failures(self) -> dict[str, str]:
        """What is really broken (for tests and the demo script)."""
        return {pid: p.failure for pid, p in self.parts.items() if p.failure is not None}

    # --- physics -------------------------------------------------------------------------------

    def advance(self, dt_s: float) -> None:
        """Let dt pass: the driver acts, the battery charges or drains, the bus settles."""
        self.time_s += dt_s
        self._inputs = driver_inputs(self.profile, self.time_s, self.ignition)
        self._bus = self._solve()
        self.battery.settle(self._bus.battery_in_a, dt_s)

    @property
    def inputs(self) -> DriverInputs:
        return self._inputs

    def _lamp_loads(self) -> Loads:
        fixed = BASE_LOAD_A[self.ignition]
        conductance = 0.0
        led = 0.0
        lamps_on = self._inputs.lamps_on
        for lamp in self.lamps.values():
            if lamp.function in lamps_on:
                conductance += lamp.conductance
                led += lamp.constant_current_a
        return Loads(fixed, conductance, led)

    def _solve(self, *, field_off: bool = False, extra_a: float = 0.0) -> BusState:
        """The bus now; the loads are summed once per change of state, not per question."""
        if not (field_off or extra_a):
            self._loads = self._lamp_loads()
        loads = self._loads
        if extra_a:
            loads = Loads(loads.fixed_a + extra_a, loads.conductance_s, loads.led_a)
        rpm = self._inputs.engine_rpm
        capacity = 0.0 if field_off else self.alternator.capacity_a(rpm)
        return solve_bus(self.battery, loads, capacity, self.alternator.setpoint_v)

    def _field_duty(self) -> float:
        rpm = self._inputs.engine_rpm
        if rpm <= 0.0:
            return 0.0
        capacity = self.alternator.capacity_a(rpm)
        if capacity <= 0.0:
            return 1.0  # the regulator asks for everything and gets nothing
        return min(1.0, self._bus.alternator_a / capacity) if self._bus.alternator_a else 0.0

    def snapshot(self) -> CarSnapshot:
        return CarSnapshot(
            time_s=self.time_s,
            ignition=self.ignition,
            engine_rpm=self._inputs.engine_rpm,
            bus_v=self._bus.voltage_v,
            battery_soc=self.battery.soc,
            alternator_a=self._bus.alternator_a,
            lamps_on=self._inputs.lamps_on,
        )

    # --- test steps and sensors ----------------------------------------------------------------

    def measure(self, part_id: str) -> Reading:
        """Carry out the part's test step and read its sensors.

        Raises NoResponseError when the controller that takes the measurement does not answer.
        """
        part = self.part(part_id)
        # Who answers for this part: itself, or (for a lamp) the controller that measures it.
        answering = self._answered_by.get(part_id, part)
        if answering.failure == "no_response":
            raise NoResponseError(part_id, getattr(answering.config, "id", part_id))
        if part.failure == SENSOR_FAULT:
            return self._broken_sensor(part_id)
        if isinstance(part, Lamp):  # the common case, kept short: most parts are lamps
            return self._measure_lamp(part, self._noise[part_id])
        return self._measure_true(part_id)

    def _measure_lamp(self, lamp: Lamp, noise: Noise) -> LampReading:
        bus_v = self._bus.voltage_v
        on = lamp.function in self._inputs.lamps_on
        if lamp.failure == "short_circuit":
            return LampReading(on, not on, noise.voltage(bus_v), SHORT_CIRCUIT_LIMIT_A, True)
        current = noise.current(lamp.current_at(bus_v))
        return LampReading(on, not on, noise.voltage(bus_v), current, False)

    def _measure_true(self, part_id: str) -> Reading:
        part = self.parts[part_id]
        noise = self._noise[part_id]
        bus_v = self._bus.voltage_v
        match part:
            case Lamp():
                return self._measure_lamp(part, noise)
            case Battery():
                step = self._solve(field_off=True)
                pulse = self._solve(field_off=True, extra_a=BATTERY_TEST_PULSE_A)
                return BatteryReading(
                    voltage_v=noise.voltage(bus_v),
                    current_a=noise.current(-self._bus.battery_in_a),
                    temperature_c=noise.temperature(BATTERY_TEMPERATURE_C),
                    step_voltage_v=noise.voltage(step.voltage_v),
                    step_current_a=noise.current(-step.battery_in_a),
                    pulse_voltage_v=noise.voltage(pulse.voltage_v),
                    pulse_current_a=noise.current(-pulse.battery_in_a),
                )
            case Alternator():
                duty = self._field_duty()
                return AlternatorReading(
                    engine_rpm=noise.rpm(self._inputs.engine_rpm),
                    output_v=noise.voltage(bus_v),
                    output_a=noise.current(self._bus.alternator_a),
                    ripple_v=noise.ripple(part.ripple_v(duty) if self._bus.alternator_a else 0.0),
                    field_duty=noise.duty(duty),
                )
            case Controller():
                return ControllerReading(noise.voltage(bus_v))

    def _broken_sensor(self, part_id: str) -> Reading:
        pattern = self._sensor_fault_pattern[part_id]
        noise = self._noise[part_id]
        true = self._measure_true(part_id)
        match true:
            case LampReading():
                value = -1.5 if pattern == "negative" else 25.5
                return LampReading(true.commanded_on, true.pulsed, true.supply_v, value, False)
            case BatteryReading():
                if pattern == "stuck":  # frozen when it broke: it no longer sees the test pulse
                    frozen = self._stuck_reading[part_id]
                    assert isinstance(frozen, BatteryReading)
                    v, i = frozen.voltage_v, frozen.current_a
                    return BatteryReading(v, i, frozen.temperature_c, v, i, v, i)
                return BatteryReading(0.0, 0.0, -40.0, 0.0, 0.0, 0.0, 0.0)
            case AlternatorReading():
                if pattern == "lost":
                    return AlternatorReading(true.engine_rpm, 0.0, 0.0, 0.0, 0.0)
                return AlternatorReading(true.engine_rpm, 25.5, -5.0, noise.ripple(0.1), 1.27)
        return true
