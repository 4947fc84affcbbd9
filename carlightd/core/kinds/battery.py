"""The battery: a lead-acid starter battery with an intelligent battery sensor on its terminal.

Here: its configuration, its reading, its failures, its self-test and what it depends on. Its DTCs
are the `kind = "battery"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated battery is
`carlightd/sources/simulated/parts/battery.py` (the core never imports a source).

Self-test thresholds and their hysteresis (README, Self-tests): each trips at its threshold and
passes again only once back past it by a margin, so a value sitting on it does not flap.
- `dead_cell`: open-circuit voltage below 11.5 V; passes again above 11.6 V.
- `weak`: internal resistance above 3 x nominal; passes again below 2.5 x nominal.
- `discharged`: open-circuit voltage below 12.105 V (15 % charge); passes again above 12.155 V
  (about 22 %): a slow drain crosses it once.
Plausibility is physics, not a fixed floor: a terminal voltage is believed down to what the
emptiest battery with a dead cell (10.0 V) gives at the measured current through a worn-out
internal resistance (15 x nominal), so a weak battery's sagging step voltage is judged `weak`,
never a `sensor_fault`. The resistance the test resolves follows from the sensor's noise at its
worst (the self-test's own calibration below): the configuration accepts no nominal resistance
whose `weak` threshold is less than five standard deviations above it.
The battery test runs while its sensor answers (it needs neither engine nor key), judging what the
reading lets it judge:
- a fresh test pulse (`pulse_age_s` 0: the points were taken in this reading) judges everything;
- between pulses (the sensor pulses every few minutes parked, see the simulated battery) its
  open-circuit estimate from rest voltage and current (`ocv_v`) still judges `dead_cell` and
  `discharged`, never `weak`;
- neither (the battery is charging or heavily loaded, so no rest estimate): not run, "no fresh test
  pulse and no rest estimate (charging or heavily loaded)";
- while the starter cranks and for `CRANK_SETTLE_S` after (the bus dips to 8-10 V, ISO 16750-2
  starting profile, and the battery recovers): not run, "cranking" / "settling after cranking";
  only the sensor's plausibility is judged.
Temperature (calibration, not the simulation's equation): a lead-acid battery's internal resistance
rises in the cold, roughly doubling from 20 °C to -20 °C (cold-cranking ratings, EN 50342-1, are
given at -18 °C for that reason); the configured resistance is the one at 20 °C. The test scales
the nominal resistance by its own table `RESISTANCE_TEMPERATURE_CAL` at the measured battery
temperature before judging `weak` and the worn-out plausibility floor, so a healthy cold battery
is not `weak`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import IdsByKind, KindSpec, PartConfig
from carlightd.core.selftests import (
    NO_ANSWER,
    PASSED,
    Hysteresis,
    ReadOutcome,
    SelfTestResult,
    Verdict,
    fail,
    not_run,
)

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
    # From 1 mΩ: below it, sense noise could pass for a weak battery (BATTERY_MIN_RESISTANCE_MOHM).
    internal_resistance_mohm: float = Field(default=5.0, ge=1.0, le=20.0)
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
    # Seconds since the step/pulse points were taken (0: in this reading; the sensor repeats its
    # last points between pulses).
    pulse_age_s: float = 0.0
    # The sensor's open-circuit estimate from rest voltage and current (no pulse needed); None
    # when the battery is not at rest (charging, or a heavy load).
    ocv_v: float | None = None
    cranking: bool = False  # the starter is turning the engine now
    since_crank_s: float | None = None  # since the starter stopped; None: no start seen yet


FAILURES = ("discharged", "weak", "dead_cell", SENSOR_FAULT)

BATTERY_MAX_V = 18.0  # no charging system drives a 12 V battery above this
BATTERY_TEMPERATURE_RANGE_C = (-39.0, 90.0)
BATTERY_WEAK_FACTOR = 3.0  # internal resistance over this many times nominal: worn out …
BATTERY_WEAK_RESET_FACTOR = 2.5  # … and, once weak, healthy again only below this
BATTERY_DEAD_CELL_V = 11.5  # a five-cell battery rests below this even when full
BATTERY_DEAD_CELL_MARGIN_V = 0.1
BATTERY_DISCHARGED_SOC = 0.15
BATTERY_DISCHARGED_MARGIN_V = 0.05  # about 7 % of charge; > 5 sigma of the open-circuit estimate

# Plausibility from physics: the lowest open-circuit voltage any battery in the car can have (empty,
# one cell shorted) and the highest resistance a battery still in service can reach.
BATTERY_MIN_EMF_V = OCV_EMPTY_V * 5 / 6
BATTERY_WORN_OUT_FACTOR = 15.0

# Calibration: internal resistance relative to 20 °C at the battery's temperature (°C, factor),
# interpolated linearly and held flat outside: the controller's own map, not the simulation's
# equation (README, The simulated car: about +2.5 %/K below 20 °C).
RESISTANCE_TEMPERATURE_CAL = ((-40.0, 2.5), (-20.0, 1.9), (0.0, 1.4), (20.0, 1.0), (60.0, 0.85))
CRANK_SETTLE_S = 3.0  # after the starter stops, the bus and the battery settle for this long


def resistance_factor(temperature_c: float) -> float:
    """The calibrated resistance factor at this battery temperature (1.0 at 20 °C)."""
    table = RESISTANCE_TEMPERATURE_CAL
    if temperature_c <= table[0][0]:
        return table[0][1]
    for (t0, f0), (t1, f1) in itertools.pairwise(table):
        if temperature_c <= t1:
            return f0 + (f1 - f0) * (temperature_c - t0) / (t1 - t0)
    return table[-1][1]


# Calibration: the sensor's noise at its worst (one standard deviation), as the sensor's data sheet
# states it. The self-test carries its own figures; it never asks the simulation.
SENSE_SIGMA_V = 0.006
SENSE_SIGMA_REL = 0.008
SENSE_SIGMA_A = 0.002
# A healthy battery takes at least this share of the pulse (the lamps take the rest as it sags).
HEALTHY_PULSE_SHARE = 0.8
RESOLUTION_SIGMAS = 5.0


def resistance_sigma(resistance_ohm: float, step_a: float, pulse_a: float) -> float:
    """One standard deviation of the measured internal resistance, at the sensor's worst noise:
    the slope of two noisy points, R = ΔV / ΔI."""
    delta_i = pulse_a - step_a
    sigma_i = math.hypot(
        abs(step_a) * SENSE_SIGMA_REL + SENSE_SIGMA_A,
        abs(pulse_a) * SENSE_SIGMA_REL + SENSE_SIGMA_A,
    )
    return math.hypot(math.sqrt(2.0) * SENSE_SIGMA_V, resistance_ohm * sigma_i) / delta_i


def min_resolvable_resistance_ohm(load_a: float = 60.0) -> float:
    """The lowest nominal resistance whose `weak` threshold is RESOLUTION_SIGMAS standard deviations
    above it, for a healthy battery's pulse at a step load up to `load_a`."""
    pulse = HEALTHY_PULSE_SHARE * BATTERY_TEST_PULSE_A
    # sigma grows with R (the current term): iterate R = k sigma(3R) / (factor - 1) to its point.
    resistance = 0.0
    for _ in range(20):
        sigma = resistance_sigma(BATTERY_WEAK_FACTOR * resistance, load_a, load_a + pulse)
        resistance = RESOLUTION_SIGMAS * sigma / (BATTERY_WEAK_FACTOR - 1.0)
    return resistance


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
    """The charge a healthy battery with this open-circuit voltage would have, 0..1: from a fresh
    test pulse, else from the sensor's rest estimate."""
    line = battery_line(reading) if reading.pulse_age_s <= 0.0 else None
    emf = line[0] if line is not None else reading.ocv_v
    if emf is None:
        return None
    fraction = (emf - OCV_EMPTY_V) / (OCV_FULL_V - OCV_EMPTY_V)
    return min(1.0, max(0.0, fraction))


class BatteryTest:
    """Battery: two points of its voltage/current line around a known load pulse give its internal
    resistance (slope) and open-circuit voltage (intercept), hence health and state of charge."""

    kind = Kind.BATTERY

    def __init__(self, config: BatteryConfig) -> None:
        self.nominal_ohm = config.internal_resistance_mohm / 1000.0
        # `weak` is judged on the resistance relative to nominal at the measured temperature.
        self.weak = Hysteresis(
            BATTERY_WEAK_FACTOR,
            BATTERY_WEAK_FACTOR - BATTERY_WEAK_RESET_FACTOR,
            fails_above=True,
        )
        self.dead_cell = Hysteresis(
            BATTERY_DEAD_CELL_V, BATTERY_DEAD_CELL_MARGIN_V, fails_above=False
        )
        self.discharged = Hysteresis(
            open_circuit_voltage(BATTERY_DISCHARGED_SOC),
            BATTERY_DISCHARGED_MARGIN_V,
            fails_above=False,
        )

    def lowest_plausible_v(self, current_a: float, temperature_c: float = 20.0) -> float:
        """The lowest terminal voltage a battery (empty, a dead cell, worn out) gives at this
        discharge current and temperature; below it the reading, not the battery, is wrong."""
        worn_out_ohm = BATTERY_WORN_OUT_FACTOR * self.nominal_ohm * resistance_factor(temperature_c)
        return BATTERY_MIN_EMF_V - max(0.0, current_a) * worn_out_ohm

    def implausible(self, reading: BatteryReading) -> str | None:
        """What in the reading no battery could produce, or None."""
        points = (
            ("voltage", reading.voltage_v, reading.current_a),
            ("field-off step voltage", reading.step_voltage_v, reading.step_current_a),
            ("pulse voltage", reading.pulse_voltage_v, reading.pulse_current_a),
        )
        for name, volts, amps in points:
            floor = self.lowest_plausible_v(amps, reading.temperature_c)
            if not floor <= volts <= BATTERY_MAX_V:
                return (
                    f"{name} reads {volts:.2f} V at {amps:.1f} A "
                    f"(plausible {max(floor, 0.0):.2f}…{BATTERY_MAX_V:.1f} V)"
                )
        t_low, t_high = BATTERY_TEMPERATURE_RANGE_C
        if not t_low <= reading.temperature_c <= t_high:
            return f"temperature reads {reading.temperature_c:.1f} °C"
        if (
            reading.ocv_v is not None
            and not BATTERY_MIN_EMF_V - 0.5 <= reading.ocv_v <= OCV_FULL_V + 0.5
        ):
            return f"open-circuit estimate reads {reading.ocv_v:.2f} V"
        return None

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if not isinstance(reading, BatteryReading):
            return NO_ANSWER
        wrong = self.implausible(reading)
        if wrong is not None:
            return fail(SENSOR_FAULT, wrong)
        if reading.cranking:
            return not_run("cranking", _SENSOR_ONLY)
        if reading.since_crank_s is not None and reading.since_crank_s < CRANK_SETTLE_S:
            # A reason that stays the same across the window: a new reason is a new publication.
            return not_run(f"settling after cranking (first {CRANK_SETTLE_S:.0f} s)", _SENSOR_ONLY)
        if reading.pulse_age_s > 0.0:
            return self._between_pulses(reading)
        line = battery_line(reading)
        if line is None:
            return fail(SENSOR_FAULT, "the test pulse did not register")
        emf, resistance = line
        relative = resistance / (self.nominal_ohm * resistance_factor(reading.temperature_c))
        judged = (
            f"open-circuit {emf:.2f} V, internal resistance {resistance * 1000:.1f} mΩ "
            f"at {reading.temperature_c:.0f} °C"
        )
        # Every threshold is judged on every reading, so each band remembers its own side.
        dead_cell = self.dead_cell.check(emf)
        weak = self.weak.check(relative)
        discharged = self.discharged.check(emf)
        if dead_cell:
            return fail("dead_cell", judged)
        if weak:
            return fail("weak", judged)
        if discharged:
            return fail("discharged", judged)
        return PASSED

    def _between_pulses(self, reading: BatteryReading) -> SelfTestResult:
        """No fresh pulse: the rest estimate judges the charge and the cells, never `weak`."""
        emf = reading.ocv_v
        if emf is None:
            return not_run(
                "no fresh test pulse and no rest estimate (charging or heavily loaded)",
                _SENSOR_ONLY,
            )
        judged = f"open-circuit estimate {emf:.2f} V at rest (no pulse this cycle)"
        dead_cell = self.dead_cell.check(emf)
        discharged = self.discharged.check(emf)
        if dead_cell:
            return fail("dead_cell", judged)
        if discharged:
            return fail("discharged", judged)
        return SelfTestResult(Verdict.PASSED, judged=_AT_REST)


# What a reading without a fresh pulse can still decide.
_SENSOR_ONLY = frozenset({SENSOR_FAULT})
_AT_REST = frozenset({SENSOR_FAULT, "dead_cell", "discharged"})


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
