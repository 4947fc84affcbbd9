"""One self-test per kind of part: the assertion that judges what the test step measured.

The test step itself (pulse, load test, ping) is carried out where the measurement is taken
(`Car.measure` in the simulation, a real controller in a car); what comes here is only the reading,
or `NO_READING` when the sensor did not answer in time. Each test is pure: a reading and the key
position in, a verdict out.

Order inside every assertion: first "can this reading be believed?" (a broken measurement is a
`sensor_fault`, never an electrical failure), then "can the part be judged now?" (`not_run` with a
reason), then the electrical verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from carlightd.config import AlternatorConfig, BatteryConfig, ComponentConfig, LampConfig
from carlightd.core.domain import (
    BATTERY_TEST_PULSE_A,
    LED_DROPOUT_V,
    OCV_EMPTY_V,
    OCV_FULL_V,
    RATED_LAMP_V,
    SENSOR_FAULT,
    AlternatorReading,
    BatteryReading,
    ControllerReading,
    Ignition,
    Kind,
    LampReading,
    Reading,
    open_circuit_voltage,
)


class _NoReading:
    """The sensor did not answer within the read timeout."""

    def __repr__(self) -> str:
        return "NO_READING"


NO_READING: Final = _NoReading()
ReadOutcome = Reading | _NoReading


def as_reading(outcome: ReadOutcome) -> Reading | None:
    return None if isinstance(outcome, _NoReading) else outcome


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not_run"


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class SelfTestResult:
    verdict: Verdict
    failure: str | None = None
    reason: str | None = None  # why not run, or what the failure was judged on

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAILED


PASSED = SelfTestResult(Verdict.PASSED)
NO_ANSWER = SelfTestResult(Verdict.NOT_RUN, reason="no reading: sensor did not answer in time")
IGNITION_OFF = SelfTestResult(Verdict.NOT_RUN, reason="ignition off: controller asleep")


def _failed(failure: str, why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.FAILED, failure, why)


def _not_run(why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.NOT_RUN, reason=why)


class SelfTest(Protocol):
    kind: Kind

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult: ...


# Thresholds, each several noise standard deviations away from any healthy reading (README).
LAMP_SENSE_RANGE_A = (-0.3, 25.0)
LAMP_MIN_JUDGING_V = LED_DROPOUT_V + 0.5
LAMP_OPEN_RATIO = 0.15
LAMP_DEGRADED_RATIO = 0.8
LAMP_SHORT_RATIO = 1.6


class LampTest:
    """Lamp: the circuit's current must match what the lamp draws at the measured supply voltage.

    Judging at the measured voltage is what keeps a flat battery from being blamed on the lamps.
    """

    kind = Kind.LAMP

    def __init__(self, config: LampConfig) -> None:
        self.is_led = config.technology == "led"
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.resistance = RATED_LAMP_V**2 / config.power_w

    def expected_a(self, supply_v: float) -> float:
        return self.led_current_a if self.is_led else supply_v / self.resistance

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if ignition is Ignition.OFF:
            return IGNITION_OFF
        if not isinstance(reading, LampReading):
            return NO_ANSWER
        low, high = LAMP_SENSE_RANGE_A
        if not low <= reading.current_a <= high:
            return _failed(SENSOR_FAULT, f"current sense reads {reading.current_a:.2f} A")
        if reading.overcurrent:
            return _failed("short_circuit", "driver tripped on overcurrent")
        if reading.supply_v < LAMP_MIN_JUDGING_V:
            return _not_run(f"supply voltage too low to judge ({reading.supply_v:.2f} V)")
        ratio = reading.current_a / self.expected_a(reading.supply_v)
        judged = f"{ratio:.0%} of expected current at {reading.supply_v:.2f} V"
        if ratio < LAMP_OPEN_RATIO:
            return _failed("open_circuit", judged)
        if ratio < LAMP_DEGRADED_RATIO:
            return _failed("degraded", judged)
        if ratio > LAMP_SHORT_RATIO:
            return _failed("short_circuit", judged)
        return PASSED


BATTERY_VOLTAGE_RANGE_V = (6.0, 18.0)
BATTERY_TEMPERATURE_RANGE_C = (-39.0, 90.0)
BATTERY_WEAK_FACTOR = 3.0  # internal resistance over this many times nominal: worn out
BATTERY_DEAD_CELL_V = 11.5  # a five-cell battery rests below this even when full
BATTERY_DISCHARGED_SOC = 0.15


def battery_line(reading: BatteryReading) -> tuple[float, float] | None:
    """(open-circuit voltage, internal resistance) from the two points around the load pulse, or
    None when the pulse did not show in the readings."""
    delta_i = reading.pulse_current_a - reading.step_current_a
    delta_v = reading.step_voltage_v - reading.pulse_voltage_v
    if delta_i < 0.5 * BATTERY_TEST_PULSE_A or delta_v <= 0.0:
        return None
    resistance = delta_v / delta_i
    return reading.step_voltage_v + reading.step_current_a * resistance, resistance


def state_of_charge(reading: BatteryReading) -> float | None:
    """The charge a healthy battery with this open-circuit voltage would have, 0..1."""
    line = battery_line(reading)
    if line is None:
        return None
    fraction = (line[0] - OCV_EMPTY_V) / (OCV_FULL_V - OCV_EMPTY_V)
    return min(1.0, max(0.0, fraction))


class BatteryTest:
    """Battery: two points of its voltage/current line around a known load pulse give its internal
    resistance (slope) and open-circuit voltage (intercept), hence health and state of charge."""

    kind = Kind.BATTERY

    def __init__(self, config: BatteryConfig) -> None:
        self.weak_ohm = BATTERY_WEAK_FACTOR * config.internal_resistance_mohm / 1000.0
        self.discharged_v = open_circuit_voltage(BATTERY_DISCHARGED_SOC)

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if not isinstance(reading, BatteryReading):
            return NO_ANSWER
        low, high = BATTERY_VOLTAGE_RANGE_V
        t_low, t_high = BATTERY_TEMPERATURE_RANGE_C
        if not (low <= reading.voltage_v <= high and low <= reading.step_voltage_v <= high):
            return _failed(SENSOR_FAULT, f"voltage reads {reading.voltage_v:.2f} V")
        if not t_low <= reading.temperature_c <= t_high:
            return _failed(SENSOR_FAULT, f"temperature reads {reading.temperature_c:.1f} °C")
        line = battery_line(reading)
        if line is None:
            return _failed(SENSOR_FAULT, "the test pulse did not register")
        emf, resistance = line
        judged = f"open-circuit {emf:.2f} V, internal resistance {resistance * 1000:.1f} mΩ"
        if emf < BATTERY_DEAD_CELL_V:
            return _failed("dead_cell", judged)
        if resistance > self.weak_ohm:
            return _failed("weak", judged)
        if emf < self.discharged_v:
            return _failed("discharged", judged)
        return PASSED


ALTERNATOR_VOLTAGE_RANGE_V = (6.0, 18.0)
ALTERNATOR_RIPPLE_LIMIT_V = 0.5
ALTERNATOR_REGULATION_BAND_V = 0.6
ALTERNATOR_SATURATED_DUTY = 0.95
ALTERNATOR_MIN_OUTPUT_A = 2.0  # a running engine alone draws far more than this
ENGINE_RUNNING_RPM = 400.0


class AlternatorTest:
    """Alternator: with the engine running, the regulator must hold the bus at its set-point unless
    it is already giving everything it has (then the demand, not the alternator, is too high)."""

    kind = Kind.ALTERNATOR

    def __init__(self, config: AlternatorConfig) -> None:
        self.setpoint_v = config.setpoint_v
        self.max_plausible_a = config.rated_current_a * 1.3

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if not isinstance(reading, AlternatorReading):
            return NO_ANSWER
        low, high = ALTERNATOR_VOLTAGE_RANGE_V
        plausible = (
            low <= reading.output_v <= high
            and -ALTERNATOR_MIN_OUTPUT_A <= reading.output_a <= self.max_plausible_a
            and 0.0 <= reading.field_duty <= 1.0
            and 0.0 <= reading.ripple_v <= 5.0
        )
        if not plausible:
            return _failed(
                SENSOR_FAULT,
                f"regulator reports {reading.output_v:.2f} V, {reading.output_a:.1f} A, "
                f"duty {reading.field_duty:.2f}",
            )
        if reading.engine_rpm < ENGINE_RUNNING_RPM:
            return _not_run("engine not running")
        if reading.output_a < ALTERNATOR_MIN_OUTPUT_A:
            return _failed("no_output", f"output {reading.output_a:.1f} A with engine running")
        if reading.ripple_v > ALTERNATOR_RIPPLE_LIMIT_V:
            return _failed("diode_failure", f"ripple {reading.ripple_v:.2f} V peak to peak")
        regulated = f"bus {reading.output_v:.2f} V for set-point {self.setpoint_v:.2f} V"
        if reading.output_v > self.setpoint_v + ALTERNATOR_REGULATION_BAND_V:
            return _failed("overcharging", regulated)
        if (
            reading.output_v < self.setpoint_v - ALTERNATOR_REGULATION_BAND_V
            and reading.field_duty < ALTERNATOR_SATURATED_DUTY
        ):
            return _failed("undercharging", f"{regulated}, field duty {reading.field_duty:.0%}")
        return PASSED


class ControllerTest:
    """Controller: it must answer a ping within the read timeout."""

    kind = Kind.CONTROLLER

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if ignition is Ignition.OFF:
            return IGNITION_OFF
        if not isinstance(reading, ControllerReading):
            return _failed("no_response", "no answer within the read timeout")
        return PASSED


def self_test_for(config: ComponentConfig) -> SelfTest:
    match config:
        case LampConfig():
            return LampTest(config)
        case BatteryConfig():
            return BatteryTest(config)
        case AlternatorConfig():
            return AlternatorTest(config)
        case _:
            return ControllerTest()
