"""Each self-test: every failure mode of its kind is detected, and the assertions in isolation."""

from __future__ import annotations

import pytest

from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds import FAILURES
from carlightd.core.kinds.alternator import AlternatorConfig, AlternatorReading, AlternatorTest
from carlightd.core.kinds.battery import BatteryConfig, BatteryReading, BatteryTest
from carlightd.core.kinds.controller import ControllerReading, ControllerTest
from carlightd.core.kinds.lamp import LampConfig, LampReading, LampTest
from carlightd.core.selftests import NO_READING, CommonCauseTest, Verdict
from tests.simulate import Bench

H7 = LampConfig(kind="lamp", id="h", function="headlamp", technology="incandescent", power_w=55)
TAIL = LampConfig(kind="lamp", id="t", function="tail", technology="led", power_w=4)
BATTERY = BatteryConfig(kind="battery", id="battery")
ALTERNATOR = AlternatorConfig(kind="alternator", id="alternator")


def parts_of(kind: Kind) -> list[str]:
    bench = Bench()
    return [pid for pid, k in bench.car.kinds.items() if k is kind]


CASES = [
    (part_id, failure) for kind in Kind for part_id in parts_of(kind) for failure in FAILURES[kind]
]


@pytest.mark.parametrize(("part_id", "failure"), CASES)
@pytest.mark.parametrize("seed", [1, 7])
def test_every_failure_mode_of_every_part_is_detected(
    part_id: str, failure: str, seed: int
) -> None:
    bench = Bench(seed=seed, ignition=Ignition.RUN)
    bench.run(2)
    bench.car.inject(part_id, failure)
    judged = 0
    for _ in range(5):
        report = bench.cycle()
        tests = bench.diagnoser.tests
        test = tests[part_id]
        reading = report.components[part_id].reading
        result = test.assess(NO_READING if reading is None else reading, Ignition.RUN)
        if isinstance(test, CommonCauseTest):  # a fuse, a ground: judged from its lamps
            results = {
                pid: tests[pid].assess(
                    NO_READING if (seen := state.reading) is None else seen, Ignition.RUN
                )
                for pid, state in report.components.items()
            }
            result = test.judge(result, results, tests)
        # A run may be unable to judge it (a flashing indicator's every on-sample falls in its
        # inrush window: open circuit only); one that judges it finds it.
        if result.judges(failure):
            assert result.verdict is Verdict.FAILED, (part_id, failure, result)
            assert result.failure == failure
            judged += 1
    assert judged >= 2, (part_id, failure)


class TestLamp:
    def reading(self, current_a: float, supply_v: float = 13.2, **kw: bool) -> LampReading:
        return LampReading(
            commanded_on=kw.get("on", True),
            pulsed=not kw.get("on", True),
            supply_v=supply_v,
            current_a=current_a,
            overcurrent=kw.get("overcurrent", False),
        )

    def test_judged_at_the_measured_supply_voltage(self) -> None:
        test = LampTest(H7)
        # 55 W at 13.2 V is 4.17 A; at 11.0 V a healthy filament draws 11/13.2 of that.
        assert test.assess(self.reading(4.17 * 11.0 / 13.2, 11.0), Ignition.ON).verdict == "passed"
        assert test.assess(self.reading(4.17, 13.2), Ignition.ON).verdict == "passed"

    @pytest.mark.parametrize(
        ("current_a", "failure"),
        [
            (0.0, "open_circuit"),
            (2.3, "degraded"),
            (7.5, "short_circuit"),
            (-1.5, "sensor_fault"),
            (25.5, "sensor_fault"),
        ],
    )
    def test_verdicts(self, current_a: float, failure: str) -> None:
        result = LampTest(H7).assess(self.reading(current_a), Ignition.RUN)
        assert (result.verdict, result.failure) == (Verdict.FAILED, failure)
        assert result.reason

    def test_overcurrent_trip_is_a_short(self) -> None:
        result = LampTest(TAIL).assess(self.reading(24.0, overcurrent=True), Ignition.RUN)
        assert result.failure == "short_circuit"

    def test_led_is_constant_current(self) -> None:
        test = LampTest(TAIL)
        assert test.assess(self.reading(4 / 13.2, 11.2), Ignition.RUN).verdict == "passed"
        assert test.assess(self.reading(4 / 13.2, 14.5), Ignition.RUN).verdict == "passed"

    def test_not_judged_below_the_judging_voltage(self) -> None:
        result = LampTest(TAIL).assess(self.reading(0.0, 8.7), Ignition.RUN)
        assert result.verdict is Verdict.NOT_RUN
        assert "supply voltage too low" in (result.reason or "")

    def test_not_run_with_ignition_off_or_without_reading(self) -> None:
        assert LampTest(H7).assess(self.reading(0.0), Ignition.OFF).verdict is Verdict.NOT_RUN
        assert LampTest(H7).assess(NO_READING, Ignition.ON).verdict is Verdict.NOT_RUN


class TestBattery:
    def reading(
        self, emf: float = 12.6, resistance: float = 0.005, load_a: float = 10.0
    ) -> BatteryReading:
        step_v = emf - load_a * resistance
        pulse_a = load_a + 20.0
        return BatteryReading(14.2, -3.0, 20.0, step_v, load_a, emf - pulse_a * resistance, pulse_a)

    def test_healthy(self) -> None:
        assert BatteryTest(BATTERY).assess(self.reading(), Ignition.RUN).verdict == "passed"

    @pytest.mark.parametrize(
        ("emf", "resistance", "failure"),
        [(12.03, 0.005, "discharged"), (10.5, 0.005, "dead_cell"), (12.6, 0.06, "weak")],
    )
    def test_verdicts(self, emf: float, resistance: float, failure: str) -> None:
        result = BatteryTest(BATTERY).assess(self.reading(emf, resistance), Ignition.ON)
        assert result.failure == failure

    def test_a_sensor_that_misses_the_pulse_is_a_sensor_fault(self) -> None:
        stuck = BatteryReading(12.5, 5.0, 20.0, 12.5, 5.0, 12.5, 5.0)
        assert BatteryTest(BATTERY).assess(stuck, Ignition.ON).failure == "sensor_fault"

    def test_out_of_range_values_are_a_sensor_fault(self) -> None:
        lost = BatteryReading(0.0, 0.0, -40.0, 0.0, 0.0, 0.0, 0.0)
        assert BatteryTest(BATTERY).assess(lost, Ignition.ON).failure == "sensor_fault"


class TestAlternator:
    def reading(self, **kw: float) -> AlternatorReading:
        values = {
            "engine_rpm": 1500.0,
            "output_v": 14.2,
            "output_a": 40.0,
            "ripple_v": 0.1,
            "field_duty": 0.5,
        } | kw
        return AlternatorReading(
            values["engine_rpm"],
            values["output_v"],
            values["output_a"],
            values["ripple_v"],
            values["field_duty"],
        )

    @pytest.mark.parametrize(
        ("values", "failure"),
        [
            ({"output_a": 0.0, "output_v": 12.2, "field_duty": 1.0}, "no_output"),
            ({"output_v": 13.0}, "undercharging"),
            ({"output_v": 15.8}, "overcharging"),
            ({"ripple_v": 1.4}, "diode_failure"),
            ({"output_v": 25.5, "output_a": -5.0, "field_duty": 1.27}, "sensor_fault"),
            ({"output_v": 0.0, "output_a": 0.0, "field_duty": 0.0}, "sensor_fault"),
        ],
    )
    def test_verdicts(self, values: dict[str, float], failure: str) -> None:
        result = AlternatorTest(ALTERNATOR).assess(self.reading(**values), Ignition.RUN)
        assert (result.verdict, result.failure) == (Verdict.FAILED, failure)

    def test_saturated_alternator_is_not_blamed_for_a_low_bus(self) -> None:
        # Giving all it has while a flat battery soaks up current: the demand is the problem, and
        # the regulator cannot be judged; only its sensor and its diodes are.
        saturated = self.reading(output_v=13.1, output_a=54.0, field_duty=1.0)
        result = AlternatorTest(ALTERNATOR).assess(saturated, Ignition.RUN)
        assert result.verdict is Verdict.NOT_RUN
        assert (result.reason or "").startswith("alternator at full field")
        assert [f for f in FAILURES[Kind.ALTERNATOR] if result.judges(f)] == [
            "diode_failure",
            "sensor_fault",
        ]

    def test_not_run_with_engine_stopped(self) -> None:
        stopped = self.reading(engine_rpm=0.0, output_a=0.0, output_v=12.5, field_duty=0.0)
        result = AlternatorTest(ALTERNATOR).assess(stopped, Ignition.ON)
        assert (result.verdict, result.reason) == (Verdict.NOT_RUN, "engine not running")


class TestController:
    def test_ping(self) -> None:
        assert ControllerTest().assess(ControllerReading(12.5), Ignition.ON).verdict == "passed"
        result = ControllerTest().assess(NO_READING, Ignition.ON)
        assert result.failure == "no_response"
        assert ControllerTest().assess(NO_READING, Ignition.OFF).verdict is Verdict.NOT_RUN
