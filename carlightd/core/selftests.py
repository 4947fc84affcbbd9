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

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAILED


PASSED = SelfTestResult(Verdict.PASSED)
NO_ANSWER = SelfTestResult(Verdict.NOT_RUN, reason="no reading: sensor did not answer in time")
IGNITION_OFF = SelfTestResult(Verdict.NOT_RUN, reason="ignition off: controller asleep")


def fail(failure: str, why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.FAILED, failure, why)


def not_run(why: str) -> SelfTestResult:
    return SelfTestResult(Verdict.NOT_RUN, reason=why)


class SelfTest(Protocol):
    kind: Kind

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult: ...
