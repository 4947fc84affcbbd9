"""What every self-test shares: the verdicts, "no reading", and the `SelfTest` protocol. Each kind's
own test (the assertion that judges what its test step measured) is in its module in
`carlightd.core.kinds`; `carlightd.core.kinds.self_test_for` picks it for a configured part.

The test step itself (pulse, load test, ping) is carried out where the measurement is taken
(`Car.measure` in the simulation, a real controller in a car); what comes here is only the reading,
or `NO_READING` when the sensor did not answer in time. Each test is pure: a reading and the key
position in, a verdict out.

Order inside every assertion: first "can this reading be believed?" (a broken measurement is a
`sensor_fault`, never an electrical failure), then "can the part be judged now?" (`not_run` with a
reason), then the electrical verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable

from carlightd.core.domain import Ignition, Kind, Reading


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
    # The failures of its kind this run decided were absent: None means all of them when
    # passed, none when not run. A test that is not run may still have judged its sensor (an
    # alternator read with the engine stopped): `not_run(why, judged={SENSOR_FAULT})`.
    judged: frozenset[str] | None = None

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAILED

    def judges(self, failure: str) -> bool:
        """Did this run decide whether `failure` is present? Only such a pass may heal it."""
        if failure == self.failure:
            return True
        if self.judged is None:
            return self.verdict is Verdict.PASSED
        return failure in self.judged


PASSED = SelfTestResult(Verdict.PASSED)
NO_ANSWER = SelfTestResult(Verdict.NOT_RUN, reason="no reading: sensor did not answer in time")
IGNITION_OFF = SelfTestResult(Verdict.NOT_RUN, reason="ignition off: controller asleep")


def fail(failure: str, why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.FAILED, failure, why)


def not_run(why: str, judged: frozenset[str] | None = None) -> SelfTestResult:
    """The part cannot be judged now (`why`); `judged`: failures still found absent (its sensor)."""
    return SelfTestResult(Verdict.NOT_RUN, reason=why, judged=judged)


class Hysteresis:
    """One threshold with a band, for a test whose value can sit near it (README, Self-tests).

    It trips when the value crosses `threshold`; once tripped it resets only when the value is back
    past the threshold by `margin`. So a value wandering on the threshold gives one verdict, not a
    flapping one. Self-tests are built per part, so each keeps its own state."""

    __slots__ = ("fails_above", "margin", "threshold", "tripped")

    def __init__(self, threshold: float, margin: float, *, fails_above: bool) -> None:
        if margin < 0.0:
            raise ValueError(f"hysteresis margin must not be negative, got {margin}")
        self.threshold = threshold
        self.margin = margin
        self.fails_above = fails_above
        self.tripped = False

    def limit(self) -> float:
        """Where the verdict changes now: the threshold, or the threshold plus the band."""
        if not self.tripped:
            return self.threshold
        return self.threshold - self.margin if self.fails_above else self.threshold + self.margin

    def check(self, value: float) -> bool:
        """Judge `value` (and remember it): True while the threshold is crossed."""
        limit = self.limit()
        self.tripped = value > limit if self.fails_above else value < limit
        return self.tripped


class SelfTest(Protocol):
    kind: Kind

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult: ...


@runtime_checkable
class CommonCauseTest(SelfTest, Protocol):
    """A test of a part nothing measures directly (a fuse, a ground point): after every other
    part's test, it judges from the results of the parts it serves (README, Common causes).
    `own` is what `assess` made of its own reading; `tests` are the other parts' tests, whose
    calibration (a lamp's technology, say) tells which results can be evidence."""

    def judge(
        self,
        own: SelfTestResult,
        results: Mapping[str, SelfTestResult],
        tests: Mapping[str, SelfTest],
    ) -> SelfTestResult: ...


def assess_before_judging(
    reading: ReadOutcome, ignition: Ignition, reading_type: type[Reading], pending: SelfTestResult
) -> SelfTestResult:
    """What a common-cause test makes of its own reading: nothing to judge with the key off or
    without an answer; else `pending` (not run yet), which its `judge` then replaces."""
    if ignition is Ignition.OFF:
        return IGNITION_OFF
    if not isinstance(reading, reading_type):
        return NO_ANSWER
    return pending


def cannot_judge(own: SelfTestResult) -> bool:
    """`assess` already found there is nothing to judge from (key off, no answer)."""
    return own is IGNITION_OFF or own is NO_ANSWER


def common_cause_tests(tests: Mapping[str, SelfTest]) -> dict[str, CommonCauseTest]:
    """The tests that judge from other parts' results, to run after all the others."""
    return {part_id: test for part_id, test in tests.items() if isinstance(test, CommonCauseTest)}
