"""Issue 12 items 2, 3 and 8: hysteresis on the thresholds, "not run" when a test cannot judge, and
the wrong-part / wrong-failure cases, each driven through the real self-tests (and, where a car is
needed, the simulated car on the workbench)."""

from __future__ import annotations

import itertools
import random

import pytest
from pydantic import ValidationError

from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds import FAILURES
from carlightd.core.kinds.alternator import AlternatorConfig, AlternatorReading, AlternatorTest
from carlightd.core.kinds.battery import (
    BatteryConfig,
    BatteryReading,
    BatteryTest,
    min_resolvable_resistance_ohm,
)
from carlightd.core.kinds.lamp import LampConfig, LampReading, LampTest
from carlightd.core.selftests import Hysteresis, Verdict
from carlightd.tools.workbench import Bench, settings

BATTERY = BatteryConfig(kind="battery", id="battery")
ALTERNATOR = AlternatorConfig(kind="alternator", id="alternator")
H7 = LampConfig(kind="lamp", id="h", function="headlamp", power_w=55)


def battery_reading(emf: float, resistance: float = 0.005, load_a: float = 10.0) -> BatteryReading:
    pulse_a = load_a + 30.0
    return BatteryReading(
        emf - load_a * resistance, load_a, 20.0, emf - load_a * resistance, load_a,
        emf - pulse_a * resistance, pulse_a,
    )  # fmt: skip


def alternator(**kw: float) -> AlternatorReading:
    values: dict[str, float] = {"engine_rpm": 1500.0, "output_v": 14.2, "output_a": 40.0}
    values |= {"ripple_v": 0.1, "field_duty": 0.5} | kw
    return AlternatorReading(
        values["engine_rpm"], values["output_v"], values["output_a"], values["ripple_v"],
        values["field_duty"],
    )  # fmt: skip


def with_parts(**updates: dict[str, object]) -> Bench:
    """The packaged car with some parts' configuration changed, on the workbench."""
    base = settings()
    parts = [c.model_copy(update=updates.get(c.id, {})) for c in base.components]
    return Bench(settings_=base.model_copy(update={"components": parts}), ignition=Ignition.RUN)


# --- hysteresis -----------------------------------------------------------------------------------


def test_a_band_trips_at_the_threshold_and_resets_only_past_the_margin() -> None:
    band = Hysteresis(10.0, 1.0, fails_above=False)
    assert [band.check(v) for v in (10.5, 9.9, 10.5, 10.9, 11.1, 10.1, 9.99)] == [
        False, True, True, True, False, False, True,
    ]  # fmt: skip
    above = Hysteresis(10.0, 1.0, fails_above=True)
    assert [above.check(v) for v in (9.5, 10.1, 9.5, 8.9, 9.5)] == [False, True, True, False, False]
    with pytest.raises(ValueError, match="margin"):
        Hysteresis(1.0, -0.1, fails_above=True)


@pytest.mark.parametrize(
    ("emf", "expected"),
    [
        # Down through 12.105 V, wandering on it, then back: one failure, one recovery.
        ([12.12, 12.10, 12.11, 12.12, 12.15, 12.16], ["p", "discharged", "d", "d", "d", "p"]),
    ],
)
def test_battery_discharged_has_a_band(emf: list[float], expected: list[str]) -> None:
    test = BatteryTest(BATTERY)
    got = []
    for value in emf:
        result = test.assess(battery_reading(value), Ignition.ON)
        got.append(result.failure or "p")
    assert got == [e if e != "d" else "discharged" for e in expected]


def test_battery_weak_has_a_band() -> None:
    test = BatteryTest(BATTERY)  # 5 mΩ nominal: weak above 15 mΩ, healthy again below 12.5 mΩ
    verdicts = [test.assess(battery_reading(12.6, r / 1000), Ignition.ON).failure for r in
                (14.0, 15.5, 14.0, 13.0, 12.0, 14.9)]  # fmt: skip
    assert verdicts == [None, "weak", "weak", "weak", None, None]


def test_lamp_ratios_have_bands() -> None:
    test = LampTest(H7)  # 4.17 A expected at 13.2 V

    def at(ratio: float) -> str | None:
        reading = LampReading(True, False, 13.2, 4.1667 * ratio, False)
        return test.assess(reading, Ignition.RUN).failure

    assert [at(r) for r in (0.83, 0.71, 0.75, 0.83)] == [None, "degraded", "degraded", None]
    # Between 0.72 and 0.82 a sense's gain error cannot tell dim from healthy: `degraded` holds.
    for ratio in (0.73, 0.81):
        held = test.assess(LampReading(True, False, 13.2, 4.1667 * ratio, False), Ignition.RUN)
        assert held.failure is None
        assert not held.judges("degraded")
        assert held.judges("open_circuit")
    assert [at(r) for r in (1.59, 1.61, 1.57, 1.54)] == [
        None,
        "short_circuit",
        "short_circuit",
        None,
    ]


def test_alternator_regulation_band_has_hysteresis() -> None:
    test = AlternatorTest(ALTERNATOR)  # set-point 14.2 V: over above 14.8, under below 13.6
    over = [test.assess(alternator(output_v=v), Ignition.RUN).failure for v in
            (14.79, 14.81, 14.75, 14.69)]  # fmt: skip
    assert over == [None, "overcharging", "overcharging", None]
    under = [test.assess(alternator(output_v=v), Ignition.RUN).failure for v in
             (13.61, 13.59, 13.65, 13.71)]  # fmt: skip
    assert under == [None, "undercharging", "undercharging", None]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("profile", ["steady", "drive"])
def test_slow_drain_across_discharged_gives_one_confirmation(seed: int, profile: str) -> None:
    """Key on, engine off, lamps on: the battery drains from 16 % to about 12 % in 10 minutes,
    crossing the 15 % threshold once. Without hysteresis this gave 15-43 events and 3-15 battery
    lamp toggles (seeds 1-3, both profiles); now the record is made and confirmed once."""
    bench = Bench(seed=seed, ignition=Ignition.ON, profile=profile)  # type: ignore[arg-type]
    bench.car.battery.soc = 0.16
    battery_events: list[str] = []
    lamp: list[bool] = []
    for _ in range(600):
        report = bench.cycle()
        battery_events += [e.type for e in report.events if e.component == "battery"]
        lamp.append(report.warning_lamps["battery"])
    assert bench.car.battery.soc < 0.13  # it really crossed the threshold
    assert battery_events == ["fault_pending", "fault_confirmed"]
    toggles = sum(1 for a, b in itertools.pairwise(lamp) if a != b)
    assert toggles == 1
    assert lamp[-1]


# --- not run means not run ------------------------------------------------------------------------


def test_alternator_at_full_field_judges_neither_regulation_nor_output() -> None:
    # Undercharging regulator behind a flat battery in winter: the field is saturated.
    result = AlternatorTest(ALTERNATOR).assess(
        alternator(output_v=12.9, output_a=60.0, field_duty=0.99), Ignition.RUN
    )
    assert result.verdict is Verdict.NOT_RUN
    for failure in ("undercharging", "overcharging", "no_output"):
        assert not result.judges(failure)
    assert result.judges("diode_failure")
    assert result.judges("sensor_fault")
    # But an overcharging bus is overcharging whatever the duty.
    over = AlternatorTest(ALTERNATOR).assess(
        alternator(output_v=15.9, field_duty=1.0), Ignition.RUN
    )
    assert over.failure == "overcharging"


def test_saturated_undercharging_alternator_never_passes() -> None:
    """A regulator 1.2 V low, a nearly flat battery soaking up current: at full field the test says
    not run, never passed, so nothing heals the regulator fault."""
    bench = with_parts()
    bench.car.inject("alternator", "undercharging")
    bench.car.battery.soc = 0.05
    test = AlternatorTest(ALTERNATOR)
    verdicts = []
    for _ in range(300):
        reading = bench.cycle().components["alternator"].reading
        assert reading is not None
        verdicts.append(test.assess(reading, Ignition.RUN))
    assert all(v.verdict is not Verdict.PASSED for v in verdicts)
    assert any((v.reason or "").startswith("alternator at full field") for v in verdicts)
    assert any(v.failure == "undercharging" for v in verdicts)


def test_engine_stopped_judges_only_the_alternator_sensor() -> None:
    bench = Bench(ignition=Ignition.OFF)
    bench.car.inject("alternator", "sensor_fault")
    seen = [bench.cycle().components["alternator"] for _ in range(3)]
    assert all(state.failure == "sensor_fault" for state in seen), seen
    bench.car.repair("alternator")
    reading = bench.cycle().components["alternator"].reading
    assert reading is not None
    result = AlternatorTest(ALTERNATOR).assess(reading, Ignition.OFF)
    assert (result.verdict, result.reason) == (Verdict.NOT_RUN, "engine not running")
    assert [f for f in FAILURES[Kind.ALTERNATOR] if result.judges(f)] == ["sensor_fault"]


def test_lamp_below_judging_voltage_still_checks_its_sense() -> None:
    result = LampTest(H7).assess(LampReading(True, False, 8.0, 3.0, False), Ignition.RUN)
    assert result.verdict is Verdict.NOT_RUN
    assert [f for f in FAILURES[Kind.LAMP] if result.judges(f)] == ["sensor_fault"]


# --- item 8: the right part, the right failure ----------------------------------------------------


@pytest.mark.parametrize("setpoint", [13.5, 13.6, 13.7])
def test_low_setpoint_undercharging_is_undercharging_not_no_output(setpoint: float) -> None:
    bench = with_parts(alternator={"setpoint_v": setpoint})
    bench.car.battery.soc = 0.95  # charged: the drifted set-point sits under the battery
    bench.run(3)
    bench.car.inject("alternator", "undercharging")
    failures = {bench.cycle().components["alternator"].failure for _ in range(20)}
    assert failures == {"undercharging"}


def test_no_output_is_still_no_output() -> None:
    result = AlternatorTest(ALTERNATOR).assess(
        alternator(output_v=12.2, output_a=0.0, field_duty=1.0), Ignition.RUN
    )
    assert result.failure == "no_output"


def test_weak_battery_under_load_is_weak_not_a_sensor_fault() -> None:
    """20 mΩ nominal, worn (x12), engine running, the drive profile's lamps: its field-off step
    voltage falls below the old fixed 6 V floor and must still be judged weak."""
    bench = Bench(
        settings_=with_parts(battery={"internal_resistance_mohm": 20.0}).settings,
        ignition=Ignition.RUN,
        profile="drive",
    )
    bench.car.inject("battery", "weak")
    failures = set()
    lowest_step = 99.0
    for _ in range(240):
        state = bench.cycle().components["battery"]
        failures.add(state.failure)
        assert isinstance(state.reading, BatteryReading)
        lowest_step = min(lowest_step, state.reading.step_voltage_v)
    assert failures == {"weak"}
    assert lowest_step < 6.0  # the case the fixed floor got wrong really happened


def test_the_reason_names_the_voltage_that_is_wrong() -> None:
    reading = BatteryReading(12.6, 5.0, 20.0, 25.5, 5.0, 12.0, 35.0)
    result = BatteryTest(BATTERY).assess(reading, Ignition.ON)
    assert result.failure == "sensor_fault"
    assert (result.reason or "").startswith("field-off step voltage reads 25.50 V")
    lost = BatteryTest(BATTERY).assess(BatteryReading(0, 0, -40, 0, 0, 0, 0), Ignition.ON)
    assert (lost.reason or "").startswith("voltage reads 0.00 V")


def test_configured_resistance_is_one_the_test_resolves() -> None:
    bound = BatteryConfig.model_fields["internal_resistance_mohm"].metadata
    lowest = next(m.ge for m in bound if hasattr(m, "ge"))
    assert lowest * 1e-3 >= min_resolvable_resistance_ohm()
    with pytest.raises(ValidationError, match="internal_resistance_mohm"):
        BatteryConfig(kind="battery", id="battery", internal_resistance_mohm=0.6)


@pytest.mark.parametrize("sample", range(6))
def test_accepted_batteries_at_the_highest_noise_never_fault(sample: int) -> None:
    """Accepted configurations drawn at random (the edges included), the highest noise, the
    drive profile with the engine running and off: no battery fault in 600 cycles."""
    rng = random.Random(sample)
    resistance = [1.0, 20.0][sample] if sample < 2 else rng.uniform(1.0, 20.0)
    capacity = rng.choice([20.0, 60.0, 400.0])
    base = settings(simulation__noise=2.0)
    parts = [
        c.model_copy(update={"internal_resistance_mohm": resistance, "capacity_ah": capacity})
        if c.kind == "battery"
        else c
        for c in base.components
    ]
    for ignition in (Ignition.RUN, Ignition.ON):
        bench = Bench(
            seed=sample,
            noise=2.0,
            ignition=ignition,
            settings_=base.model_copy(update={"components": parts}),
        )
        bench.car.battery.soc = 0.6
        for _ in range(600):
            report = bench.cycle()
            assert [f for f in report.faults if f.component == "battery"] == [], (
                resistance,
                capacity,
                report.components["battery"].reason,
            )
