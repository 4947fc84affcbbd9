"""The battery: a lead-acid starter battery with an intelligent battery sensor on its terminal.

Here: its configuration, its reading, its failures, its self-test and what it depends on. Its DTCs
are the `kind = "battery"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated battery is
`carlightd/sources/simulated/parts/battery.py` (the core never imports a source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import IdsByKind, KindSpec, PartConfig
from carlightd.core.selftests import NO_ANSWER, PASSED, ReadOutcome, SelfTestResult, fail

# Specifications both the car and its diagnostics know, as a workshop manual would state them.
BATTERY_TEST_PULSE_A = 30.0  # the load the battery test step adds
OCV_EMPTY_V = 12.0  # lead-acid open-circuit voltage, 6 cells, empty …
OCV_FULL_V = 12.7  # … and full; roughly linear in between


def open_circuit_voltage(soc: float) -> float:
    """A healthy lead-acid battery's resting voltage at a state of charge between 0 and 1."""
    return OCV_EMPTY_V + (OCV_FULL_V - OCV_EMPTY_V) * soc


class BatteryConfig(PartConfig):
    kind: Literal["battery"]
    capacity_ah: float = Field(default=60.0, gt=1.0, le=400.0)
    internal_resistance_mohm: float = Field(default=5.0, gt=0.5, le=20.0)
    initial_soc: float = Field(default=0.85, ge=0.3, le=1.0)


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class BatteryReading(Reading):
    """The intelligent battery sensor, read twice around the test step's load pulse.

    During the step the controller switches the alternator's field off for a moment and adds a known
    load, so two points of the battery's voltage/current line are measured whatever the engine does:
    the slope is the internal resistance, the intercept the open-circuit voltage.
    """

    voltage_v: float  # at the terminals, as the car runs
    current_a: float  # positive = discharging
    temperature_c: float
    step_voltage_v: float  # alternator field off for a moment: the battery alone carries the loads
    step_current_a: float
    pulse_voltage_v: float  # field off and a known extra load
    pulse_current_a: float


FAILURES = ("discharged", "weak", "dead_cell", SENSOR_FAULT)

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
            return fail(SENSOR_FAULT, f"voltage reads {reading.voltage_v:.2f} V")
        if not t_low <= reading.temperature_c <= t_high:
            return fail(SENSOR_FAULT, f"temperature reads {reading.temperature_c:.1f} °C")
        line = battery_line(reading)
        if line is None:
            return fail(SENSOR_FAULT, "the test pulse did not register")
        emf, resistance = line
        judged = f"open-circuit {emf:.2f} V, internal resistance {resistance * 1000:.1f} mΩ"
        if emf < BATTERY_DEAD_CELL_V:
            return fail("dead_cell", judged)
        if resistance > self.weak_ohm:
            return fail("weak", judged)
        if emf < self.discharged_v:
            return fail("discharged", judged)
        return PASSED


def _depends_on(config: BatteryConfig, ids: IdsByKind) -> tuple[str, ...]:
    return tuple(ids[Kind.ALTERNATOR])  # its charge, while the engine runs


# An alternator that does not charge lets the battery run flat; nothing else it does makes a
# battery look discharged, weak or short of a cell.
_FLAT = frozenset({"discharged"})

KIND = KindSpec(
    kind=Kind.BATTERY,
    config_model=BatteryConfig,
    reading_type=BatteryReading,
    failures=FAILURES,
    self_test=BatteryTest,
    exactly_one=True,
    depends_on=_depends_on,
    caused_by={
        Kind.ALTERNATOR: {"no_output": _FLAT, "undercharging": _FLAT, "diode_failure": _FLAT}
    },
)
