"""The ground point: a chassis stud or splice through which one or more lamps return their current.

Here: its configuration, its reading, its failure, its self-test and the parts that depend on it.
Its DTC is the `kind = "ground"` entry of `carlightd/core/dtc_catalogue.toml`; the simulated
ground is `carlightd/sources/simulated/parts/ground.py` (the core never imports a source).

A body controller cannot measure a ground point. A corroded or loose one adds resistance in series
with every lamp it serves, so each filament draws less than its calibration expects at the
measured supply, while an LED driver regulates its current through it. Its test (`judge`, run
after every lamp's test) therefore takes as evidence only the filament lamps it serves whose test
judged `degraded` this cycle: a lit filament, or an off one's test pulse judged against the lamp
test's cold-bulb calibration; a sample the lamp test judges for an open circuit only (the first
one after switch-on, in the inrush window) is none. Every lamp is on or pulsed, so a ground is
judged day and night:
- `high_resistance` when at least 2 of them were judged and every one read `degraded`;
- passed as soon as one of them passed;
- not run otherwise: fewer than 2 judged (one dim lamp alone is that lamp; an open or shorted
  bulb, an inrush-window sample, a broken sense are no evidence of a ground), ignition off, no
  reading.
Calibration: the minimum of 2 lamps (`GROUND_MIN_EVIDENCE`), and the assumption that a ground
worth reporting (a few ohms) takes every filament of 16 W or more below the lamp test's
`degraded` ratio (0.72) and none below its `open_circuit` ratio — true for the default car's
bulbs through a nominal sense (README, The simulated car); through a sense reading 15 % high a lit
16 W or 21 W bulb reads up to 0.82, which the lamp test leaves unjudged for `degraded` (between
its bands), so it is no evidence either way and its cold pulses find the ground. A ground so bad
that its lamps read open is not told from open circuits; two bulbs turning dim in the same cycle
behind one ground would be read as the ground.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from carlightd.core.domain import Ignition, Kind, Reading
from carlightd.core.kinds.fuse import lamp_evidence, named_once
from carlightd.core.kinds.lamp import LampTest
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

GROUND_MIN_EVIDENCE = 2  # filament lamps judged in the same cycle before the ground is judged


class GroundConfig(PartConfig):
    kind: Literal["ground"]
    serves: list[Identifier] = Field(min_length=1)

    @field_validator("serves")
    @classmethod
    def _each_lamp_once(cls, serves: list[str]) -> list[str]:
        return named_once(serves)


# Not frozen: one is built for every part on every cycle.
@dataclass(slots=True)
class GroundReading(Reading):
    """What the controller knows of the ground point by itself: its own supply (a ground point
    has no sensor)."""

    supply_v: float


FAILURES = ("high_resistance",)


_JUDGED_FROM_LAMPS = not_run("judged from the lamps it serves")  # `judge` decides


class GroundTest:
    """Ground point: judged from the filament lamps it serves (module docstring)."""

    kind = Kind.GROUND

    def __init__(self, config: GroundConfig) -> None:
        self.serves = tuple(config.serves)

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        return assess_before_judging(reading, ignition, GroundReading, _JUDGED_FROM_LAMPS)

    def judge(
        self,
        own: SelfTestResult,
        results: Mapping[str, SelfTestResult],
        tests: Mapping[str, SelfTest],
    ) -> SelfTestResult:
        if cannot_judge(own):
            return own
        filaments = tuple(
            part_id
            for part_id in self.serves
            if isinstance(test := tests.get(part_id), LampTest) and not test.is_led
        )
        # A sample judged for an open circuit only (inrush window) is no evidence here.
        evidence = {
            part_id: result
            for part_id, result in lamp_evidence(filaments, results).items()
            if result.judges("degraded")
        }
        if any(result.verdict is Verdict.PASSED for result in evidence.values()):
            return PASSED
        if len(evidence) < GROUND_MIN_EVIDENCE:
            return not_run(
                f"{len(evidence)} of the filament lamps it serves judged, "
                f"{GROUND_MIN_EVIDENCE} needed"
            )
        # What is left judged `degraded` and did not pass: every one of them read dim.
        return fail(
            "high_resistance",
            f"every filament lamp it serves reads dim: {', '.join(sorted(evidence))}",
        )


def _serves(config: GroundConfig) -> tuple[str, ...]:
    return tuple(config.serves)


KIND = KindSpec(
    kind=Kind.GROUND,
    config_model=GroundConfig,
    reading_type=GroundReading,
    failures=FAILURES,
    self_test=GroundTest,
    references={"serves": Kind.LAMP},
    dependents=_serves,
)
