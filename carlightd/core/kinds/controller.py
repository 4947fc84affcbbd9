"""The controller: a body control module, which switches and measures the lamps.

Here: its configuration, its reading, its failures and its self-test. Its DTCs are the
`kind = "controller"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated controller is
`carlightd/sources/simulated/parts/controller.py` (the core never imports a source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carlightd.core.domain import Ignition, Kind, Reading
from carlightd.core.kinds.spec import KindSpec, PartConfig
from carlightd.core.selftests import IGNITION_OFF, PASSED, ReadOutcome, SelfTestResult, fail


class ControllerConfig(PartConfig):
    kind: Literal["controller"]


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class ControllerReading(Reading):
    """The body controller answered its ping."""

    supply_v: float


FAILURES = ("no_response",)


class ControllerTest:
    """Controller: it must answer a ping within the read timeout."""

    kind = Kind.CONTROLLER

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if ignition is Ignition.OFF:
            return IGNITION_OFF
        if not isinstance(reading, ControllerReading):
            return fail("no_response", "no answer within the read timeout")
        return PASSED


def _test(config: ControllerConfig) -> ControllerTest:
    return ControllerTest()  # a ping needs nothing from the configuration


KIND = KindSpec(
    kind=Kind.CONTROLLER,
    config_model=ControllerConfig,
    reading_type=ControllerReading,
    failures=FAILURES,
    self_test=_test,
)
