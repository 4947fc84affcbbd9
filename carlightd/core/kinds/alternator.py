"""The alternator: a claw-pole alternator whose regulator reports over LIN.

Here: its configuration, its reading, its failures and its self-test. Its DTCs are the
`kind = "alternator"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated alternator is
`carlightd/sources/simulated/parts/alternator.py` (the core never imports a source).

Self-test thresholds and their hysteresis (README, Self-tests): each trips at its threshold and
passes again only once back past it by a margin.
- `no_output`: output below 2 A with the engine running; passes again above 3 A. With the field
  duty below 95 % and the bus more than 0.2 V (`ALTERNATOR_UNASKED_V`, > 30 sigma of the sense)
  below the set-point, the regulator is not even asking for current (its set-point drifted under
  the battery's voltage; a healthy one drives the field full when the bus is low): that is
  `undercharging`, not `no_output`. With smart charging's low set-point (12.8 V) the battery sits
  only a few tenths under it, so the regulation band alone would call it `no_output`.
- `diode_failure`: ripple above 0.5 V peak to peak; passes again below 0.4 V.
- `overcharging`: bus above set-point + 0.6 V; passes again below set-point + 0.5 V.
- `undercharging`: bus below set-point - 0.6 V with the field below 95 %; passes again above
  set-point - 0.5 V.
The set-point is the one the engine computer commands now (smart charging: anywhere between about
12.8 and 15.0 V, temperature compensated), reported by the regulator as `setpoint_v`; only a
regulator that does not report it is judged against the configured `setpoint_v`. A commanded
set-point outside 10.5-16.0 V is no regulator's: a `sensor_fault`.
Not run (each with its reason; nothing heals on them but what is listed as still judged):
- no reading: nothing judged;
- cranking (the starter turns the engine) and for `CRANK_SETTLE_S` after it stops: the bus dips
  to 8-10 V and the regulator is only taking over; the report's plausibility is still judged
  (while cranking, any bus voltage down to 0 V is plausible: a weak battery collapses under the
  starter);
- engine not running (below 400 rpm, key off included): the regulator's report is still checked for
  plausibility, so a repaired `sensor_fault` heals with the engine off; nothing else is judged;
- alternator at full field (duty 95 % or more) with the bus not above the overcharging threshold:
  the demand, not the regulator, sets the bus, so `undercharging`, `overcharging` and `no_output`
  cannot be judged; `sensor_fault` and `diode_failure` (ripple) still are. It used to say passed,
  which healed a regulator fault that was still there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import KindSpec, PartConfig
from carlightd.core.selftests import (
    NO_ANSWER,
    PASSED,
    Hysteresis,
    ReadOutcome,
    SelfTestResult,
    fail,
    not_run,
)


class AlternatorConfig(PartConfig):
    kind: Literal["alternator"]
    rated_current_a: float = Field(default=120.0, gt=10.0, le=400.0)
    setpoint_v: float = Field(default=14.2, ge=13.5, le=14.8)


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class AlternatorReading(Reading):
    """The alternator's regulator as reported over LIN, plus engine speed."""

    engine_rpm: float
    output_v: float
    output_a: float
    ripple_v: float  # AC ripple, peak to peak
    field_duty: float  # 0..1; 1 means the regulator asks for all the alternator has
    setpoint_v: float | None = None  # commanded by the engine computer; None: not reported
    cranking: bool = False  # the starter is turning the engine now
    since_crank_s: float | None = None  # since the starter stopped; None: no start seen yet


FAILURES = ("no_output", "undercharging", "overcharging", "diode_failure", SENSOR_FAULT)

ALTERNATOR_VOLTAGE_RANGE_V = (6.0, 18.0)
ALTERNATOR_RIPPLE_LIMIT_V = 0.5
ALTERNATOR_REGULATION_BAND_V = 0.6
ALTERNATOR_SATURATED_DUTY = 0.95
ALTERNATOR_MIN_OUTPUT_A = 2.0  # a running engine alone draws far more than this
ALTERNATOR_UNASKED_V = 0.2
ALTERNATOR_SETPOINT_RANGE_V = (10.5, 16.0)  # a commanded set-point outside: the report is wrong
CRANK_SETTLE_S = 3.0  # after the starter stops, the regulator takes over within this
ENGINE_RUNNING_RPM = 400.0
ALTERNATOR_VOLTAGE_MARGIN_V = 0.1  # hysteresis of the regulation band; > 15 sigma of the sense
ALTERNATOR_RIPPLE_MARGIN_V = 0.1
ALTERNATOR_OUTPUT_MARGIN_A = 1.0
_SENSOR_ONLY = frozenset({SENSOR_FAULT})
_AT_FULL_FIELD = frozenset({SENSOR_FAULT, "diode_failure"})


class AlternatorTest:
    """Alternator: with the engine running, the regulator must hold the bus at its set-point unless
    it is already giving everything it has (then the demand, not the alternator, is too high)."""

    kind = Kind.ALTERNATOR

    def __init__(self, config: AlternatorConfig) -> None:
        self.setpoint_v = config.setpoint_v
        self.max_plausible_a = config.rated_current_a * 1.3
        band, margin = ALTERNATOR_REGULATION_BAND_V, ALTERNATOR_VOLTAGE_MARGIN_V
        self.no_output = Hysteresis(
            ALTERNATOR_MIN_OUTPUT_A, ALTERNATOR_OUTPUT_MARGIN_A, fails_above=False
        )
        self.ripple = Hysteresis(
            ALTERNATOR_RIPPLE_LIMIT_V, ALTERNATOR_RIPPLE_MARGIN_V, fails_above=True
        )
        # Judged on the deviation from the set-point commanded now (it moves with smart charging).
        self.over = Hysteresis(band, margin, fails_above=True)
        self.under = Hysteresis(-band, margin, fails_above=False)

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if not isinstance(reading, AlternatorReading):
            return NO_ANSWER
        low, high = ALTERNATOR_VOLTAGE_RANGE_V
        if reading.cranking:
            low = 0.0  # a worn or flat battery under the starter can fall to any voltage
        plausible = (
            low <= reading.output_v <= high
            and -ALTERNATOR_MIN_OUTPUT_A <= reading.output_a <= self.max_plausible_a
            and 0.0 <= reading.field_duty <= 1.0
            and 0.0 <= reading.ripple_v <= 5.0
            and (
                reading.setpoint_v is None
                or ALTERNATOR_SETPOINT_RANGE_V[0]
                <= reading.setpoint_v
                <= ALTERNATOR_SETPOINT_RANGE_V[1]
            )
        )
        if not plausible:
            return fail(
                SENSOR_FAULT,
                f"regulator reports {reading.output_v:.2f} V, {reading.output_a:.1f} A, "
                f"duty {reading.field_duty:.2f}",
            )
        if reading.cranking:
            return not_run("cranking", _SENSOR_ONLY)
        if reading.engine_rpm < ENGINE_RUNNING_RPM:
            return not_run("engine not running", _SENSOR_ONLY)
        if reading.since_crank_s is not None and reading.since_crank_s < CRANK_SETTLE_S:
            return not_run(f"settling after cranking (first {CRANK_SETTLE_S:.0f} s)", _SENSOR_ONLY)
        setpoint = self.setpoint_v if reading.setpoint_v is None else reading.setpoint_v
        deviation = reading.output_v - setpoint
        regulated = f"bus {reading.output_v:.2f} V for set-point {setpoint:.2f} V"
        saturated = reading.field_duty >= ALTERNATOR_SATURATED_DUTY
        if self.no_output.check(reading.output_a):
            low = self.under.check(deviation)  # judged always, so the band keeps its side
            if not saturated and (low or deviation < -ALTERNATOR_UNASKED_V):
                # The regulator is not asking: its set-point is below what the battery holds.
                return fail(
                    "undercharging",
                    f"{regulated}, output {reading.output_a:.1f} A at field duty "
                    f"{reading.field_duty:.0%}",
                )
            return fail("no_output", f"output {reading.output_a:.1f} A with engine running")
        if self.ripple.check(reading.ripple_v):
            return fail("diode_failure", f"ripple {reading.ripple_v:.2f} V peak to peak")
        if saturated and deviation <= self.over.limit():
            # Giving everything it has: the demand sets the bus; regulation cannot be judged.
            return not_run(
                f"alternator at full field ({regulated}, field duty {reading.field_duty:.0%})",
                _AT_FULL_FIELD,
            )
        if self.over.check(deviation):
            return fail("overcharging", regulated)
        if self.under.check(deviation):
            return fail("undercharging", f"{regulated}, field duty {reading.field_duty:.0%}")
        return PASSED


KIND = KindSpec(
    kind=Kind.ALTERNATOR,
    config_model=AlternatorConfig,
    reading_type=AlternatorReading,
    failures=FAILURES,
    self_test=AlternatorTest,
    exactly_one=True,
)
