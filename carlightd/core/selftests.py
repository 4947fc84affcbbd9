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

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

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
    # The failures of its kind this run could decide (present or absent); None: all of them.
    # A test that could judge only some (an alternator sensor read with the engine stopped)
    # passes for those alone, so nothing else heals on it.
    judged: frozenset[str] | None = None

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAILED

    def judges(self, failure: str) -> bool:
        """Did this run decide whether `failure` is present? Only such a pass may heal it."""
        if self.verdict is Verdict.NOT_RUN:
            return False
        return self.judged is None or failure in self.judged or failure == self.failure


PASSED = SelfTestResult(Verdict.PASSED)
NO_ANSWER = SelfTestResult(Verdict.NOT_RUN, reason="no reading: sensor did not answer in time")
IGNITION_OFF = SelfTestResult(Verdict.NOT_RUN, reason="ignition off: controller asleep")


def fail(failure: str, why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.FAILED, failure, why)


def not_run(why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.NOT_RUN, reason=why)


def passed_only(judged: frozenset[str], why: str) -> SelfTestResult:
    """Passed for the failures in `judged`; the others could not be judged now (`why`)."""
    return SelfTestResult(Verdict.PASSED, reason=why, judged=judged)


class SelfTest(Protocol):
    kind: Kind

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult: ...
