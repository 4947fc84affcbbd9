"""Fuses and ground points (issue 13): the car's series paths, their self-tests judged from the
lamps behind them, and common-cause isolation on the workbench — several lamps failing together
behind one fuse or ground are that part's failure; one lamp failing alone is the lamp."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from carlightd import config
from carlightd.core.domain import Ignition
from carlightd.core.kinds.fuse import FuseConfig, FuseReading, FuseTest
from carlightd.core.kinds.ground import GroundConfig, GroundReading, GroundTest
from carlightd.core.kinds.lamp import LampConfig, LampReading, LampTest
from carlightd.core.selftests import (
    IGNITION_OFF,
    NO_ANSWER,
    NO_READING,
    PASSED,
    SelfTest,
    SelfTestResult,
    Verdict,
    fail,
    not_run,
)
from carlightd.sources.simulated.parts.ground import HIGH_RESISTANCE_OHM
from carlightd.sources.simulated.parts.lamp import Lamp
from tests.simulate import Bench, settings

CONFIRM = settings().diagnostics.confirm_cycles
COMPONENTS = {c.id: c for c in settings().components}


def lamps_of(part: str) -> frozenset[str]:
    component = COMPONENTS[part]
    if isinstance(component, FuseConfig):
        return frozenset(component.feeds)
    if isinstance(component, GroundConfig):
        return frozenset(component.serves)
    return frozenset()


def filaments_of(part: str) -> frozenset[str]:
    lamps = (COMPONENTS[lamp] for lamp in lamps_of(part))
    return frozenset(
        lamp.id
        for lamp in lamps
        if isinstance(lamp, LampConfig) and lamp.technology == "incandescent"
    )


def diagnosed(*injected: tuple[str, str], profile: str = "steady") -> Bench:
    bench = Bench(seed=3, ignition=Ignition.RUN, profile=profile)  # type: ignore[arg-type]
    bench.run(2)
    for part, failure in injected:
        bench.car.inject(part, failure)
    bench.run(CONFIRM + 3)
    return bench


def consequences(bench: Bench) -> dict[str, str]:
    report = bench.run(1)
    return {f.component: f.consequence_of for f in report.faults if f.consequence_of}


# --- the simulated series path ------------------------------------------------------------------


def test_a_blown_fuse_opens_every_circuit_it_feeds_and_nothing_else() -> None:
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.run(1)
    before = bench.car.bus.alternator_a
    bench.car.inject("fuse_front_left", "blown")
    bench.run(1)
    for lamp in lamps_of("fuse_front_left"):
        reading = bench.car.measure(lamp)
        assert isinstance(reading, LampReading)
        assert reading.current_a == 0.0, lamp  # on or pulsed, nothing flows
        assert not reading.overcurrent
    right = bench.car.measure("headlamp_right")
    assert isinstance(right, LampReading)
    assert right.current_a > 3.0
    # The headlamp's 4 A is gone from the bus too.
    assert bench.car.bus.alternator_a < before - 3.5
    bench.car.repair("fuse_front_left")
    bench.run(1)
    left = bench.car.measure("headlamp_left")
    assert isinstance(left, LampReading)
    assert left.current_a > 3.0


def test_a_lamp_behind_a_blown_fuse_with_a_short_trips_nothing() -> None:
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.car.inject("headlamp_left", "short_circuit")
    bench.car.inject("fuse_front_left", "blown")
    reading = bench.car.measure("headlamp_left")
    assert isinstance(reading, LampReading)
    assert (reading.current_a, reading.overcurrent) == (0.0, False)


def test_a_corroded_ground_adds_its_resistance_in_series_with_each_lamp() -> None:
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.run(3)  # the headlamps are long on: hot filaments
    lamp = bench.car.parts["headlamp_left"]
    assert isinstance(lamp, Lamp)
    healthy = bench.car.measure("headlamp_left")
    tail = bench.car.measure("tail_left")
    bench.car.inject("ground_front", "high_resistance")
    bench.run(1)
    dim = bench.car.measure("headlamp_left")
    assert isinstance(healthy, LampReading)
    assert isinstance(dim, LampReading)
    # I = V / (R_lamp + R_ground), at the bus voltage the controller measures, as its sense reads.
    expected = lamp.sense_gain * dim.supply_v / (1.0 / lamp.conductance + HIGH_RESISTANCE_OHM)
    assert dim.current_a == pytest.approx(expected, rel=1e-6)
    assert dim.current_a < 0.5 * healthy.current_a
    # The rear ground is sound: the tail LED draws as before.
    after = bench.car.measure("tail_left")
    assert isinstance(tail, LampReading)
    assert isinstance(after, LampReading)
    assert after.current_a == pytest.approx(tail.current_a, rel=1e-3)


def test_an_led_keeps_its_current_through_a_corroded_ground() -> None:
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.run(3)
    before = bench.car.measure("tail_left")
    bench.car.inject("ground_rear", "high_resistance")
    bench.run(1)
    after = bench.car.measure("tail_left")
    assert isinstance(before, LampReading)
    assert isinstance(after, LampReading)
    assert after.current_a == pytest.approx(before.current_a, rel=1e-3)


# --- the self-tests, judged from the lamps behind them --------------------------------------------

FUSE = FuseConfig(kind="fuse", id="f", rating_a=15, feeds=["a", "b", "c"])
GROUND = GroundConfig(kind="ground", id="g", serves=["a", "b", "c"])
TESTS: dict[str, SelfTest] = {
    "a": LampTest(LampConfig(kind="lamp", id="a", function="headlamp", power_w=55)),
    "b": LampTest(LampConfig(kind="lamp", id="b", function="headlamp", power_w=55)),
    "c": LampTest(LampConfig(kind="lamp", id="c", function="tail", technology="led", power_w=4)),
}
OPEN = fail("open_circuit", "0% of expected current")
DIM = fail("degraded", "40% of expected current")
SENSOR = fail("sensor_fault", "current sense reads -1.50 A")
LOW = not_run("supply voltage too low to judge (9.00 V)")
INRUSH = SelfTestResult(
    Verdict.PASSED, reason="cold filament inrush", judged=frozenset({"open_circuit"})
)


def judge_fuse(**results: SelfTestResult) -> SelfTestResult:
    test = FuseTest(FUSE)
    return test.judge(test.assess(FuseReading(14.2), Ignition.RUN), results, TESTS)


def judge_ground(**results: SelfTestResult) -> SelfTestResult:
    test = GroundTest(GROUND)
    return test.judge(test.assess(GroundReading(14.2), Ignition.RUN), results, TESTS)


def test_a_fuse_is_blown_when_every_judged_lamp_it_feeds_reads_open() -> None:
    result = judge_fuse(a=OPEN, b=OPEN, c=OPEN)
    assert (result.verdict, result.failure) == (Verdict.FAILED, "blown")
    assert result.reason == "every lamp it feeds reads open: a, b, c"
    # A broken sense says nothing of the current; a lamp too low to judge neither.
    assert judge_fuse(a=OPEN, b=OPEN, c=SENSOR).failure == "blown"
    assert judge_fuse(a=OPEN, b=LOW, c=OPEN).failure == "blown"


def test_a_fuse_passes_once_one_lamp_passes_current() -> None:
    for other in (PASSED, DIM, fail("short_circuit", "driver tripped"), INRUSH):
        assert judge_fuse(a=OPEN, b=OPEN, c=other) is PASSED
    assert judge_fuse(a=PASSED, b=SENSOR, c=LOW) is PASSED  # one is enough to pass


def test_one_dark_lamp_is_no_evidence_against_its_fuse() -> None:
    result = judge_fuse(a=OPEN, b=SENSOR, c=LOW)
    assert result.verdict is Verdict.NOT_RUN
    assert result.reason == "1 of the lamps it feeds judged, 2 needed"
    assert not result.judges("blown")


def test_a_fuse_is_not_judged_with_the_key_off_or_without_a_reading() -> None:
    test = FuseTest(FUSE)
    assert test.judge(test.assess(FuseReading(12.6), Ignition.OFF), {}, TESTS) is IGNITION_OFF
    assert test.judge(test.assess(NO_READING, Ignition.RUN), {}, TESTS) is NO_ANSWER


def test_a_ground_is_high_resistance_when_every_hot_filament_it_serves_is_dim() -> None:
    result = judge_ground(a=DIM, b=DIM, c=PASSED)  # the LED regulates through it: no evidence
    assert (result.verdict, result.failure) == (Verdict.FAILED, "high_resistance")
    assert result.reason == "every filament lamp it serves reads dim: a, b"


def test_a_ground_passes_once_a_hot_filament_passes() -> None:
    assert judge_ground(a=DIM, b=PASSED, c=PASSED) is PASSED


def test_a_ground_is_not_judged_without_two_hot_filaments() -> None:
    # A cold filament (inrush) is judged for an open circuit only; an open bulb is not dim.
    for b in (INRUSH, OPEN, SENSOR, LOW):
        result = judge_ground(a=DIM, b=b, c=DIM)
        assert result.verdict is Verdict.NOT_RUN, b
        assert result.reason == "1 of the filament lamps it serves judged, 2 needed"
    # A shorted bulb is no evidence either: the two dim ones are.
    shorted = fail("short_circuit", "driver tripped on overcurrent")
    assert judge_ground(a=DIM, b=shorted, c=PASSED).verdict is Verdict.NOT_RUN


def test_fuses_and_grounds_must_name_lamps() -> None:
    components = [c.model_dump() for c in settings().components]
    fuse = next(c for c in components if c["kind"] == "fuse")
    fuse["feeds"] = [*fuse["feeds"], "battery"]
    with pytest.raises(ValidationError) as caught:
        config.Settings(components=components)
    [(path, message)] = config.describe(caught.value)
    assert path == "(top level)"
    assert message == f"fuse {fuse['id']!r} names feeds 'battery', which is not a lamp component"
    with pytest.raises(ValidationError):
        FuseConfig(kind="fuse", id="f", rating_a=15, feeds=[])
    with pytest.raises(ValidationError):
        FuseConfig(kind="fuse", id="f", rating_a=0.5, feeds=["a"])
    with pytest.raises(ValidationError):
        GroundConfig(kind="ground", id="g", serves=[])
    for twice in (
        lambda: FuseConfig(kind="fuse", id="f", rating_a=15, feeds=["a", "b", "a"]),
        lambda: GroundConfig(kind="ground", id="g", serves=["a", "a"]),
    ):
        with pytest.raises(ValidationError, match="lists 'a' twice"):
            twice()


# --- common-cause isolation on the workbench ---------------------------------------------------


@pytest.mark.parametrize("profile", ["steady", "drive"])
@pytest.mark.parametrize("fuse", ["fuse_front_left", "fuse_rear"])
def test_lamps_dark_behind_a_blown_fuse_are_its_consequences(fuse: str, profile: str) -> None:
    bench = diagnosed((fuse, "blown"), profile=profile)
    report = bench.run(1)
    assert report.root_causes() == {fuse: "blown"}
    assert consequences(bench) == dict.fromkeys(lamps_of(fuse), fuse)
    assert report.components[fuse].dtc == "B1220"
    assert report.warning_lamps["bulb"]


@pytest.mark.parametrize("profile", ["steady", "drive"])
def test_lamps_dim_behind_a_corroded_ground_are_its_consequences(profile: str) -> None:
    bench = diagnosed(("ground_front", "high_resistance"), profile=profile)
    report = bench.run(1)
    assert report.root_causes() == {"ground_front": "high_resistance"}
    assert consequences(bench) == dict.fromkeys(filaments_of("ground_front"), "ground_front")
    assert report.components["ground_front"].dtc == "B1221"


@pytest.mark.parametrize("ground", ["ground_front", "ground_rear"])
@pytest.mark.parametrize("ignition", [Ignition.RUN, Ignition.ON])
def test_a_corroded_ground_is_found_by_day_from_the_test_pulses(
    ground: str, ignition: Ignition
) -> None:
    bench = Bench(seed=3, ignition=ignition, profile="drive")
    bench.run(160)  # the drive profile's daytime: every filament is off and pulse-tested
    assert not bench.car.inputs.lamps_on & {"headlamp", "high_beam"}
    bench.car.inject(ground, "high_resistance")
    bench.run(CONFIRM + 3)
    report = bench.run(1)
    assert report.root_causes() == {ground: "high_resistance"}
    found = {f.component: f.consequence_of for f in report.faults if f.consequence_of}
    assert found == dict.fromkeys(filaments_of(ground), ground)
    # No fuse mistakes the dim pulses for dark circuits.
    assert all(
        report.components[part].status == "ok" for part in COMPONENTS if part.startswith("fuse")
    )


@pytest.mark.parametrize(
    ("lamp", "failure"),
    [
        ("headlamp_left", "open_circuit"),
        ("brake_left", "open_circuit"),
        ("headlamp_right", "degraded"),
    ],
)
def test_one_lamp_failing_alone_is_the_lamp(lamp: str, failure: str) -> None:
    bench = diagnosed((lamp, failure))
    report = bench.run(1)
    assert report.root_causes() == {lamp: failure}
    assert [f.component for f in report.faults] == [lamp]
    for part in COMPONENTS:
        if lamp in lamps_of(part):  # its fuse and its ground
            assert report.components[part].status == "ok", part


def test_a_blown_fuse_and_a_bulb_out_behind_another_fuse_are_both_roots() -> None:
    bench = diagnosed(("fuse_front_left", "blown"), ("brake_right", "open_circuit"))
    report = bench.run(1)
    assert report.root_causes() == {"fuse_front_left": "blown", "brake_right": "open_circuit"}
    assert consequences(bench) == dict.fromkeys(lamps_of("fuse_front_left"), "fuse_front_left")
    assert report.components["fuse_rear"].status == "ok"


def test_an_open_bulb_behind_a_corroded_ground_is_its_own_root() -> None:
    bench = diagnosed(("ground_front", "high_resistance"), ("headlamp_left", "open_circuit"))
    report = bench.run(1)
    assert report.root_causes() == {
        "ground_front": "high_resistance",
        "headlamp_left": "open_circuit",
    }
    assert consequences(bench) == dict.fromkeys(
        filaments_of("ground_front") - {"headlamp_left"}, "ground_front"
    )


def test_a_fuse_heals_after_repair_and_its_lamps_with_it() -> None:
    bench = diagnosed(("fuse_rear", "blown"))
    bench.car.repair("fuse_rear")
    report = bench.run(settings().diagnostics.heal_cycles + 2)
    assert report.faults == []
    assert report.components["fuse_rear"].status == "ok"
    # A rear ground that could not be judged while its lamps were dark is judged again.
    assert report.components["ground_rear"].status == "ok"


def test_a_dead_controller_leaves_fuses_and_grounds_untested() -> None:
    bench = diagnosed(("bcm", "no_response"))
    report = bench.run(1)
    assert report.root_causes() == {"bcm": "no_response"}
    for part in ("fuse_front_left", "ground_rear"):
        state = report.components[part]
        assert state.status == "untested"
        assert state.reason is not None
        assert "judged" in state.reason
