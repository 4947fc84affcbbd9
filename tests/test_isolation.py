"""The isolation matrix: for every single failure of every part, exactly that part is the root cause
and nothing else is blamed; then dependent symptoms, and a seeded set of double failures."""

from __future__ import annotations

import random

import pytest

from carlightd.core.domain import Ignition, Kind
from carlightd.core.isolation import Topology, isolate
from carlightd.core.kinds import FAILURES
from carlightd.core.kinds.fuse import FuseConfig
from carlightd.core.kinds.ground import GroundConfig
from carlightd.core.kinds.lamp import LampConfig, LampReading
from carlightd.core.selftests import NO_ANSWER, PASSED, SelfTestResult, Verdict
from tests.simulate import Bench, settings

CONFIRM = settings().diagnostics.confirm_cycles
KINDS = Bench().car.kinds
SINGLE = [(part, failure) for part, kind in KINDS.items() for failure in FAILURES[kind]]
ENGINE_ONLY = {"no_output", "undercharging", "overcharging", "diode_failure"}
# The default car's wiring, read from its configuration (never counted by hand).
COMPONENTS = settings().components
FEEDS = {c.id: frozenset(c.feeds) for c in COMPONENTS if isinstance(c, FuseConfig)}
SERVES = {c.id: frozenset(c.serves) for c in COMPONENTS if isinstance(c, GroundConfig)}
FILAMENTS = {
    c.id for c in COMPONENTS if isinstance(c, LampConfig) and c.technology == "incandescent"
}


def failing_behind(part: str) -> frozenset[str]:
    """The lamps a failed fuse or ground makes fail with it (DESIGN §2): every lamp a blown fuse
    feeds goes dark; every filament a corroded ground serves goes dim (an LED driver regulates)."""
    if part in FEEDS:
        return FEEDS[part]
    if part in SERVES:
        return SERVES[part] & FILAMENTS
    return frozenset()


@pytest.mark.parametrize(("part", "failure"), SINGLE)
def test_single_failure_engine_running(part: str, failure: str) -> None:
    bench = Bench(seed=11, ignition=Ignition.RUN)
    bench.run(2)
    bench.car.inject(part, failure)
    report = bench.run(CONFIRM + 2)
    assert report.root_causes() == {part: failure}
    # A fuse's or ground's lamps fail with it, each as its consequence; nothing else fails.
    behind = failing_behind(part)
    assert sorted((f.component, f.status) for f in report.faults) == sorted(
        (pid, "confirmed") for pid in {part, *behind}
    )
    assert {f.component: f.consequence_of for f in report.faults if f.consequence_of} == (
        dict.fromkeys(behind, part)
    )
    assert report.components[part].status == "failed"
    assert all(report.components[pid].consequence_of == part for pid in behind)
    others = {pid: s.status for pid, s in report.components.items() if pid not in {part, *behind}}
    if KINDS[part] is Kind.CONTROLLER:
        # A dead controller: its lamps cannot be measured, so they are untested, never failed.
        lamps = [pid for pid, kind in KINDS.items() if kind is Kind.LAMP]
        assert all(others[pid] == "untested" for pid in lamps)
        assert all(
            report.components[pid].reason == f"controller {part} unreachable" for pid in lamps
        )
        assert others["battery"] == "ok"
        assert others["alternator"] == "ok"
    else:
        # A ground point whose every filament is dark behind a blown fuse cannot be judged.
        unjudgeable = {
            g for g, lamps in SERVES.items() if g != part and lamps & FILAMENTS <= behind
        }
        assert {pid for pid, status in others.items() if status != "ok"} <= unjudgeable
        assert all(others[pid] == "untested" for pid in unjudgeable)


@pytest.mark.parametrize(("part", "failure"), SINGLE)
def test_single_failure_engine_off(part: str, failure: str) -> None:
    """Key on, engine off: the alternator cannot be judged, so its electrical failures are not
    seen (and nothing else is blamed for them); everything else is found as with the engine on."""
    bench = Bench(seed=12, ignition=Ignition.ON)
    bench.run(2)
    bench.car.inject(part, failure)
    report = bench.run(CONFIRM + 2)
    if KINDS[part] is Kind.ALTERNATOR and failure in ENGINE_ONLY:
        assert report.faults == []
        assert report.components[part].status == "untested"
        assert report.components[part].reason == "engine not running"
    else:
        assert report.root_causes() == {part: failure}
        assert {f.component: f.consequence_of for f in report.faults if f.consequence_of} == (
            dict.fromkeys(failing_behind(part), part)
        )
        assert len(report.faults) == 1 + len(failing_behind(part))


def test_flat_battery_blames_no_lamp() -> None:
    bench = Bench(ignition=Ignition.ON, profile="steady")
    bench.car.inject("battery", "discharged")
    report = bench.run(CONFIRM + 2)
    assert report.root_causes() == {"battery": "discharged"}
    # Every lamp really is dimmer than on a charged battery, and none is blamed for it.
    headlamp = report.components["headlamp_left"]
    assert headlamp.status == "ok"
    assert isinstance(headlamp.reading, LampReading)
    assert headlamp.reading.supply_v < 12.0
    lamps_and_controller = [pid for pid, k in KINDS.items() if k in (Kind.LAMP, Kind.CONTROLLER)]
    assert all(report.components[pid].status == "ok" for pid in lamps_and_controller)


def test_battery_drained_by_failed_alternator_is_its_consequence() -> None:
    bench = Bench(ignition=Ignition.RUN)
    bench.car.battery.soc = 0.17  # just above "discharged"; 35 A of loads will get it there
    bench.car.inject("alternator", "no_output")
    seen_battery = None
    for _ in range(600):
        report = bench.cycle()
        battery = [f for f in report.faults if f.component == "battery"]
        if battery and battery[0].status == "confirmed":
            seen_battery = battery[0]
            break
    assert seen_battery is not None, "the battery never ran flat"
    assert seen_battery.failure == "discharged"
    assert seen_battery.consequence_of == "alternator"
    assert report.root_causes() == {"alternator": "no_output"}
    assert report.components["battery"].consequence_of == "alternator"
    # The engine stops: the alternator can no longer be tested, but its fault is remembered and the
    # flat battery stays its consequence.
    bench.car.set_ignition(Ignition.ON)
    report = bench.run(3)
    assert report.components["alternator"].status == "failed"
    battery_fault = next(f for f in report.faults if f.component == "battery")
    assert battery_fault.consequence_of == "alternator"


def expected_roots(pair: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """The specification of double failures, written independently of the implementation:
    a dead controller hides its lamps; an alternator that does not charge makes a flat battery
    its consequence. Returns (roots, consequences: part -> root part)."""
    injected = dict(pair)
    roots = dict(injected)
    consequences: dict[str, str] = {}
    if injected.get("bcm") == "no_response":
        # … and the fuses and grounds judged from those lamps.
        for part in list(roots):
            if KINDS[part] in (Kind.LAMP, Kind.FUSE, Kind.GROUND):
                del roots[part]
        return roots, consequences
    # A blown fuse darkens every lamp it feeds: their electrical failures are hidden in the dark,
    # a broken current sense is still its own; the others are the fuse's consequences.
    dark: set[str] = set()
    for fuse in (part for part, failure in injected.items() if failure == "blown"):
        for lamp in FEEDS[fuse]:
            dark.add(lamp)
            if injected.get(lamp) == "sensor_fault":
                continue
            roots.pop(lamp, None)
            consequences[lamp] = fuse
    # A corroded ground dims every filament it serves that is lit (a dim bulb among them is
    # hidden); it is found from at least two of them, and they are its consequences.
    for ground in (part for part, failure in injected.items() if failure == "high_resistance"):
        dimmed = {
            lamp
            for lamp in SERVES[ground] & FILAMENTS
            if lamp not in dark and injected.get(lamp) in (None, "degraded")
        }
        if len(dimmed) < 2:
            del roots[ground]
            continue
        for lamp in dimmed:
            roots.pop(lamp, None)
            consequences[lamp] = ground
    alternator = injected.get("alternator")
    if alternator in {"no_output", "undercharging", "diode_failure"} and (
        injected.get("battery") == "discharged"
    ):
        del roots["battery"]
        consequences["battery"] = "alternator"
    return roots, consequences


def double_failures(count: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    pairs: list[list[tuple[str, str]]] = []
    parts = sorted(KINDS)
    while len(pairs) < count:
        a, b = rng.sample(parts, 2)
        pairs.append([(a, rng.choice(FAILURES[KINDS[a]])), (b, rng.choice(FAILURES[KINDS[b]]))])
    # Make sure the interesting interactions are in the set whatever the seed gives.
    pairs += [
        [("bcm", "no_response"), ("tail_left", "open_circuit")],
        [("alternator", "no_output"), ("battery", "discharged")],
        [("alternator", "undercharging"), ("battery", "weak")],
        [("alternator", "sensor_fault"), ("battery", "discharged")],
        [("battery", "dead_cell"), ("headlamp_left", "degraded")],
        [("battery", "weak"), ("alternator", "no_output")],
    ]
    return pairs


@pytest.mark.parametrize("pair", double_failures(40, seed=2026), ids=str)
def test_double_failures(pair: list[tuple[str, str]]) -> None:
    bench = Bench(seed=5, ignition=Ignition.RUN)
    bench.run(2)
    for part, failure in pair:
        bench.car.inject(part, failure)
    report = bench.run(CONFIRM + 2)
    roots, consequences = expected_roots(pair)
    assert report.root_causes() == roots
    found = {f.component: f.consequence_of for f in report.faults if f.consequence_of}
    assert found == consequences
    blamed = {f.component for f in report.faults}
    assert blamed <= {part for part, _ in pair} | set(consequences)


def test_isolate_follows_the_causal_table_only() -> None:
    topology = Topology(settings().components)
    results = dict.fromkeys(KINDS, PASSED)
    results["alternator"] = SelfTestResult(Verdict.FAILED, "overcharging")
    results["battery"] = SelfTestResult(Verdict.FAILED, "discharged")
    findings = isolate(results, topology, {})
    assert findings["battery"].consequence_of is None  # overcharging cannot flatten a battery
    results["alternator"] = SelfTestResult(Verdict.FAILED, "undercharging")
    assert isolate(results, topology, {})["battery"].consequence_of == "alternator"
    results["alternator"] = NO_ANSWER
    assert (
        isolate(results, topology, {"alternator": {"no_output"}})["battery"].consequence_of
        == "alternator"
    )
