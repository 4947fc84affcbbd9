"""The fuse: one fuse in the distribution box, feeding one or more lamp circuits.

Here: its configuration, its reading, its failure, its self-test and the parts that depend on it.
Its DTC is the `kind = "fuse"` entry of `carlightd/core/dtc_catalogue.toml`; the simulated fuse is
`carlightd/sources/simulated/parts/fuse.py` (the core never imports a source).

A body controller cannot measure a fuse: nothing senses the voltage after it. Its test judges from
the lamps it feeds (`judge`, run after every lamp's test), as a workshop would:
- `blown` when at least 2 lamps it feeds were judged this cycle (passed, or failed other than a
  `sensor_fault`; every lamp is either on or pulse-tested, so every judged lamp had current asked
  of it) and every one of them read `open_circuit`: two circuits opening in the same cycle share
  a cause, and the fuse is what they share.
- passed as soon as one of them passed current (passed, `degraded` or `short_circuit`): current
  flowed through the fuse.
- not run with fewer than 2 judged lamps (one dark lamp alone is that lamp's fault), with the
  ignition off, or without a reading.
Calibration: the minimum of 2 lamps (`FUSE_MIN_EVIDENCE`). Two bulbs blowing in the very same
cycle behind one fuse would be read as the fuse: the rule cannot tell them apart, and a real
workshop checks the fuse first too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import Identifier, KindSpec, PartConfig
from carlightd.core.selftests import (
    PASSED,
    ReadOutcome,
    SelfTest,
    SelfTestResult,
    Verdict,
    assess_before_judging,
    cannot_judge,
    fail,
    not_run,
)

# Blade fuses are made from 1 A to 40 A (ISO 8820-3, types C and F), cartridge and bolt-in fuses
# up to 120 A and more; a lamp circuit is fused at 5 to 30 A.
FUSE_RATING_A = (1.0, 120.0)
FUSE_MIN_EVIDENCE = 2  # lamps judged in the same cycle before the fuse is judged


class FuseConfig(PartConfig):
    kind: Literal["fuse"]
    rating_a: float = Field(ge=FUSE_RATING_A[0], le=FUSE_RATING_A[1])
    feeds: list[Identifier] = Field(min_length=1)

    @field_validator("feeds")
    @classmethod
    def _each_lamp_once(cls, feeds: list[str]) -> list[str]:
        return named_once(feeds)


# Not frozen: one is built for every part on every cycle.
@dataclass(slots=True)
class FuseReading(Reading):
    """What the controller knows of the fuse by itself: its own supply (a fuse has no sensor)."""

    supply_v: float


FAILURES = ("blown",)


def named_once(ids: list[str]) -> list[str]:
    """`ids` if no id is listed twice (a lamp fed twice by one fuse is a typing slip)."""
    seen: set[str] = set()
    for part_id in ids:
        if part_id in seen:
            raise ValueError(f"lists {part_id!r} twice")
        seen.add(part_id)
    return ids


_JUDGED = {Verdict.PASSED, Verdict.FAILED}


def lamp_evidence(
    served: tuple[str, ...], results: Mapping[str, SelfTestResult]
) -> dict[str, SelfTestResult]:
    """The results among `served` that say something about the circuit: judged, and not about
    a broken current sense (which says nothing of the current)."""
    return {
        part_id: result
        for part_id in served
        if (result := results.get(part_id)) is not None
        and result.verdict in _JUDGED
        and result.failure != SENSOR_FAULT
    }


_JUDGED_FROM_LAMPS = not_run("judged from the lamps it feeds")  # `judge` decides


class FuseTest:
    """Fuse: judged from the lamps it feeds (module docstring)."""

    kind = Kind.FUSE

    def __init__(self, config: FuseConfig) -> None:
        self.feeds = tuple(config.feeds)

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        return assess_before_judging(reading, ignition, FuseReading, _JUDGED_FROM_LAMPS)

    def judge(
        self,
        own: SelfTestResult,
        results: Mapping[str, SelfTestResult],
        tests: Mapping[str, SelfTest],
    ) -> SelfTestResult:
        if cannot_judge(own):
            return own
        evidence = lamp_evidence(self.feeds, results)
        if any(result.failure != "open_circuit" for result in evidence.values()):
            return PASSED  # current flowed through it
        if len(evidence) < FUSE_MIN_EVIDENCE:
            return not_run(
                f"{len(evidence)} of the lamps it feeds judged, {FUSE_MIN_EVIDENCE} needed"
            )
        return fail("blown", f"every lamp it feeds reads open: {', '.join(sorted(evidence))}")


def _feeds(config: FuseConfig) -> tuple[str, ...]:
    return tuple(config.feeds)


KIND = KindSpec(
    kind=Kind.FUSE,
    config_model=FuseConfig,
    reading_type=FuseReading,
    failures=FAILURES,
    self_test=FuseTest,
    references={"feeds": Kind.LAMP},
    dependents=_feeds,
)
