"""The simulated battery: a lead-acid starter battery — state of charge, internal resistance,
charge acceptance — and its intelligent battery sensor.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.battery`; this is
the part the simulated car is built from, which the core never imports (it lives with its source).

Its failures act on separate things, so several at once simply add up: `discharged` on the state
of charge, `weak` on the internal resistance, `dead_cell` on the open-circuit voltage (five cells
of six); a broken sensor (`sensor_fault`) changes only what the sensor reports. A standing
`discharged` drains the battery once, when injected, and it charges back as any battery would; an
intermittent one cannot drain and refill it from one cycle to the next, so in the cycles it is
present the battery acts as one charged to `DISCHARGED_SOC` (the charge it holds is set aside, and
counted on, untouched, as the car drives).

Temperature (the battery follows the ambient with a thermal time constant `THERMAL_TAU_S`, an hour:
a 15-20 kg block warms and cools slowly): its internal resistance is the configured one at 20 °C
times `1 + RESISTANCE_PER_K * (20 - T)` (about +2.5 %/K in the cold, so about 2x at -20 °C, the
rise behind cold-cranking ratings at -18 °C, EN 50342-1; held at 0.85x or more when hot); its
usable capacity is `1 - CAPACITY_PER_K * (20 - T)` of the rated one (about -0.8 %/K: 84 % at 0 °C,
as Discover Energy's capacity-versus-temperature table gives for discharges over an hour, -16 %
at 0 °C against 25 °C; some 70 % at -20 °C), held within 50-105 %.

The intelligent battery sensor's test pulse (the alternator's field off for a moment and a 30 A
load, `BATTERY_TEST_PULSE_A`) is not run every second while parked: every `PULSE_PARKED_S`
(10 min) with the key off, every `PULSE_AWAKE_S` (1 min) with the key on and the engine stopped;
with the engine running, at every reading (`PULSE_RUNNING_S` 0), where a field-off step of
milliseconds goes unnoticed, the battery is charging (so no rest estimate could stand in) and the
charge changes fast. Never while the starter cranks. Between pulses the sensor reports its last
points (`pulse_age_s` > 0) and an open-circuit estimate from voltage and current (`ocv_v` = V + I x
the last pulse's resistance) while it discharges at most `REST_MAX_A` (60 A: every load the key
can switch on; charging, the charge polarisation hides the open-circuit voltage: `ocv_v` is None).
When that estimate leaves the last pulse's open-circuit voltage by more than `PULSE_TRIGGER_V`
(a failure between pulses), the sensor pulses at once.

Starting (`can_crank`): the engine catches only if the battery holds at least `CRANK_MIN_V`
(7.5 V) under the starter, about the lowest starting voltage of ISO 16750-2's severe profiles and
of a cold-cranking test (a battery's CCA rating asks 7.2 V held for 30 s at -18 °C, GM service
information "Battery Rating And Current Test"; below that solenoids drop out and engine computers
reset), and is charged to at least
`CRANK_MIN_SOC` (20 %, about 12.1 V at rest): a lead-acid battery below that cannot sustain
hundreds of amperes, whatever its rest voltage (this model's linear resistance does not show the
collapse, so the threshold stands for it). Below, the starter turns, the engine does not start.
"""

from __future__ import annotations

from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds.battery import (
    BATTERY_TEST_PULSE_A,
    BatteryConfig,
    BatteryReading,
    open_circuit_voltage,
)
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.sensors import Noise

CELLS = 6
CHARGE_POLARISATION_OHM = 0.040
CHARGE_POLARISATION_SOC_OHM = 0.70
REFERENCE_TEMPERATURE_C = 20.0  # the configured resistance and capacity hold here
RESISTANCE_PER_K = 0.025
CAPACITY_PER_K = 0.008
THERMAL_TAU_S = 3600.0
DISCHARGED_SOC = 0.05
PULSE_PARKED_S = 600.0
PULSE_AWAKE_S = 60.0
PULSE_RUNNING_S = 0.0
REST_MAX_A = 60.0
PULSE_TRIGGER_V = 0.05
CRANK_MIN_SOC = 0.20
CRANK_MIN_V = 7.5


class Battery(SimulatedPart[BatteryConfig, BatteryReading]):
    kind = Kind.BATTERY
    # The sensor's signal is lost (all zeros), or it freezes and no longer sees the test pulse.
    SENSOR_FAULTS = ("lost", "stuck")

    def __init__(self, config: BatteryConfig) -> None:
        super().__init__(config)
        self.capacity_ah = config.capacity_ah
        self.nominal_resistance = config.internal_resistance_mohm / 1000.0
        self.soc = config.initial_soc
        self.temperature_c = REFERENCE_TEMPERATURE_C
        # The sensor's memory of its last pulse: when, its noisy points, and the line through them.
        self._pulse_at: float | None = None
        self._points = (0.0, 0.0, 0.0, 0.0)
        self._line: tuple[float, float] | None = None  # (open-circuit voltage, resistance)

    def inject(
        self, failure: str, intermittent: float | None = None, *, present: bool = True
    ) -> None:
        super().inject(failure, intermittent, present=present)
        if failure == "discharged" and intermittent is None:
            self.soc = DISCHARGED_SOC

    @property
    def _acting_soc(self) -> float:
        """The charge it acts with now: an intermittent discharge, present, puts it out of reach."""
        if self.has("discharged") and self.held.get("discharged") is not None:
            return min(self.soc, DISCHARGED_SOC)
        return self.soc

    def repair(self) -> None:
        """A new battery, charged as the configured one was."""
        super().repair()
        self.soc = self.config.initial_soc
        self._pulse_at = None  # a new battery (and sensor): pulsed at the next reading
        self._line = None

    @property
    def emf(self) -> float:
        ocv = open_circuit_voltage(self._acting_soc)
        if self.has("dead_cell"):
            return ocv * (CELLS - 1) / CELLS
        return ocv

    @property
    def temperature_factor(self) -> float:
        """Internal resistance relative to the configured one, at the battery's temperature."""
        return max(0.85, 1.0 + RESISTANCE_PER_K * (REFERENCE_TEMPERATURE_C - self.temperature_c))

    @property
    def usable_capacity_ah(self) -> float:
        cold = 1.0 - CAPACITY_PER_K * (REFERENCE_TEMPERATURE_C - self.temperature_c)
        return self.capacity_ah * min(1.05, max(0.5, cold))

    def can_crank(self, cranking_v: float) -> bool:
        """Whether it turns the starter fast enough for the engine to catch: charged to at least
        `CRANK_MIN_SOC` and holding at least `CRANK_MIN_V` under the starter."""
        return self._acting_soc >= CRANK_MIN_SOC and cranking_v >= CRANK_MIN_V

    def warm(self, ambient_c: float, dt_s: float) -> None:
        """Follow the ambient temperature with the battery's thermal lag."""
        self.temperature_c += (ambient_c - self.temperature_c) * min(1.0, dt_s / THERMAL_TAU_S)

    @property
    def discharge_resistance(self) -> float:
        worn = 12.0 if self.has("weak") else 1.0
        return self.nominal_resistance * worn * self.temperature_factor

    @property
    def charge_resistance(self) -> float:
        return (
            self.discharge_resistance
            + CHARGE_POLARISATION_OHM
            + CHARGE_POLARISATION_SOC_OHM * self._acting_soc**3
        )

    def settle(self, current_in_a: float, dt_s: float) -> None:
        """Integrate the charge that flowed in (negative: out) over dt."""
        self.soc += current_in_a * dt_s / 3600.0 / self.usable_capacity_ah
        self.soc = min(1.0, max(0.0, self.soc))

    def _pulse_interval_s(self, car: CarView) -> float:
        if car.engine_running:
            return PULSE_RUNNING_S
        return PULSE_PARKED_S if car.ignition is Ignition.OFF else PULSE_AWAKE_S

    def _rest_ocv(self, voltage_v: float, current_a: float, cranking: bool) -> float | None:
        """V + I x R from the last pulse, while discharging gently; else None."""
        if self._line is None or cranking or not 0.0 <= current_a <= REST_MAX_A:
            return None
        return voltage_v + current_a * self._line[1]

    def _pulse(self, car: CarView, noise: Noise) -> None:
        # The alternator's field off for a moment, then a known load on top.
        step = car.solve(field_off=True)
        pulse = car.solve(field_off=True, extra_a=BATTERY_TEST_PULSE_A)
        points = (
            noise.voltage(step.voltage_v),
            noise.current(-step.battery_in_a),
            noise.voltage(pulse.voltage_v),
            noise.current(-pulse.battery_in_a),
        )
        self._pulse_at = car.time_s
        self._points = points
        step_v, step_a, pulse_v, pulse_a = points
        if pulse_a - step_a > 0.5 * BATTERY_TEST_PULSE_A and step_v > pulse_v:
            resistance = (step_v - pulse_v) / (pulse_a - step_a)
            self._line = (step_v + step_a * resistance, resistance)

    def measure(self, car: CarView, noise: Noise) -> BatteryReading:
        bus = car.bus
        cranking = car.cranking
        voltage = noise.voltage(bus.voltage_v)
        current = noise.current(-bus.battery_in_a)
        temperature = noise.temperature(self.temperature_c)
        if not cranking:
            estimate = self._rest_ocv(voltage, current, cranking)
            jumped = (
                estimate is not None
                and self._line is not None
                and abs(estimate - self._line[0]) > PULSE_TRIGGER_V
            )
            due = (
                self._pulse_at is None
                or car.time_s - self._pulse_at >= self._pulse_interval_s(car) - 1e-9
            )
            if due or jumped:
                self._pulse(car, noise)
        step_v, step_a, pulse_v, pulse_a = self._points
        return BatteryReading(
            voltage_v=voltage,
            current_a=current,
            temperature_c=temperature,
            step_voltage_v=step_v,
            step_current_a=step_a,
            pulse_voltage_v=pulse_v,
            pulse_current_a=pulse_a,
            # Never pulsed (cranking since the car was built): as old as the car, never fresh.
            pulse_age_s=car.time_s - (-1.0 if self._pulse_at is None else self._pulse_at),
            ocv_v=self._rest_ocv(voltage, current, cranking),
            cranking=cranking,
            since_crank_s=car.since_crank_s,
        )

    def broken(self, true: BatteryReading, pattern: str, noise: Noise) -> BatteryReading:
        if pattern == "stuck" and self._stuck is not None:
            frozen = self._stuck  # frozen when it broke: it no longer sees the test pulse
            v, i = frozen.voltage_v, frozen.current_a
            return BatteryReading(v, i, frozen.temperature_c, v, i, v, i)
        return BatteryReading(0.0, 0.0, -40.0, 0.0, 0.0, 0.0, 0.0)
