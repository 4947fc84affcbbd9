"""The alternator: a claw-pole alternator whose regulator reports over LIN.

Here: its configuration, its reading, its failures and its self-test. Its DTCs are the
`kind = "alternator"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated alternator is
`carlightd/sources/simulated/parts/alternator.py` (the core never imports a source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import KindSpec, PartConfig
from carlightd.core.selftests import NO_ANSWER, PASSED, ReadOutcome, SelfTestResult, fail, not_run


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


FAILURES = ("no_output", "undercharging", "overcharging", "diode_failure", SENSOR_FAULT)

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
            return fail(
                SENSOR_FAULT,
                f"regulator reports {reading.output_v:.2f} V, {reading.output_a:.1f} A, "
                f"duty {reading.field_duty:.2f}",
            )
        if reading.engine_rpm < ENGINE_RUNNING_RPM:
            return not_run("engine not running")
        if reading.output_a < ALTERNATOR_MIN_OUTPUT_A:
            return fail("no_output", f"output {reading.output_a:.1f} A with engine running")
        if reading.ripple_v > ALTERNATOR_RIPPLE_LIMIT_V:
            return fail("diode_failure", f"ripple {reading.ripple_v:.2f} V peak to peak")
        regulated = f"bus {reading.output_v:.2f} V for set-point {self.setpoint_v:.2f} V"
        if reading.output_v > self.setpoint_v + ALTERNATOR_REGULATION_BAND_V:
            return fail("overcharging", regulated)
        if (
            reading.output_v < self.setpoint_v - ALTERNATOR_REGULATION_BAND_V
            and reading.field_duty < ALTERNATOR_SATURATED_DUTY
        ):
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
