"""The fidelity report (`bench/fidelity.py`) in miniature: a few short drives, every single failure
once, a few double failures. The report has its shape, and single failures are isolated exactly
on it; the specification it checks against can say no."""

from __future__ import annotations

import json

from bench.fidelity import run, table
from bench.fidelity_spec import Outcome, Seen, Situation, Wiring, disagreements, expect
from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds import FAILURES
from tests.simulate import settings


def test_a_tiny_fidelity_run_has_its_shape_and_isolates_every_single_failure() -> None:
    report = run(
        drives=2,
        cycles=100,
        single_seeds=1,
        doubles=3,
        window=100,
        jobs=1,
        progress=False,
        ignitions=(Ignition.RUN,),
        warmup_max=12,
    )
    json.dumps(report)  # it is what bench/fidelity.json holds
    healthy, single, double = report["healthy"], report["single"], report["double"]
    parts = settings().components
    assert healthy["drives"] == 2
    assert healthy["part_cycles"] == 2 * 100 * len(parts)
    assert healthy["confirmed_false_alarms"] == 0, healthy["alarms"]
    # Every failure of every part (here with the engine running only).
    failures = sum(len(FAILURES[Kind(part.kind)]) for part in parts)
    assert single["cases"] == failures
    assert single["exact"] == single["cases"], single["misses"]
    assert single["isolation_accuracy"] == 1.0
    assert single["missed_detections"] == 0
    assert isinstance(single["cycles_to_confirm_median"], int | float)
    assert single["cycles_to_confirm_worst"] >= single["cycles_to_confirm_median"]
    assert double["cases"] >= 3
    assert set(report["targets"]) == {
        "zero_confirmed_false_alarms",
        "zero_pending_false_alarms",
        "exact_single_isolation",
        "every_double_as_specified",
    }
    assert "single failures isolated exactly" in table(report)


def test_the_specification_says_no_to_a_wrong_diagnosis() -> None:
    wiring = Wiring.of(settings().components)
    lamp = "headlamp_left"
    right = expect(wiring, [(lamp, "open_circuit")], Situation(True, 0.8))
    assert right == [Outcome(roots={lamp: "open_circuit"})]
    nothing_seen = Seen()
    assert disagreements(right[0], nothing_seen) == [
        f"missed: {lamp} open_circuit never confirmed as a root cause"
    ]
    wrong_part = Seen(
        confirmed={("headlamp_right", "open_circuit")},
        raised={("headlamp_right", "open_circuit"): {None}},
        confirmed_as={("headlamp_right", "open_circuit"): {None}},
    )
    assert "wrong: headlamp_right open_circuit raised (confirmed) as a root cause" in (
        disagreements(right[0], wrong_part)
    )
    # The engine stopped: a charging failure cannot be seen, so nothing is the right answer.
    stopped = expect(wiring, [("alternator", "no_output")], Situation(False, 0.8))
    assert stopped[0].roots == {}
    # A dead controller hides its lamps' failures.
    hidden = expect(wiring, [("bcm", "no_response"), (lamp, "degraded")], Situation(True, 0.8))
    assert hidden[0].roots == {"bcm": "no_response"}
