"""The simulated car's physics: plausible numbers, charge and drain, regulation, drop-out."""

from __future__ import annotations

import pytest

from carlightd.core.domain import Ignition
from carlightd.core.kinds.alternator import AlternatorConfig
from carlightd.core.kinds.battery import BatteryConfig
from carlightd.core.kinds.lamp import LampConfig
from carlightd.sources.simulated.electrical import Loads, solve_bus
from carlightd.sources.simulated.parts.alternator import Alternator
from carlightd.sources.simulated.parts.battery import Battery
from carlightd.sources.simulated.parts.lamp import Lamp
from carlightd.sources.simulated.profile import driver_inputs
from tests.simulate import Bench

BATTERY = BatteryConfig(kind="battery", id="battery", initial_soc=0.85)
ALTERNATOR = AlternatorConfig(kind="alternator", id="alternator")
NO_LOAD = Loads(0.0, 0.0, 0.0)


def test_open_circuit_voltage_spans_empty_to_full() -> None:
    battery = Battery(BATTERY)
    battery.soc = 0.0
    assert solve_bus(battery, NO_LOAD, 0.0, 14.2).voltage_v == pytest.approx(12.0)
    battery.soc = 1.0
    assert solve_bus(battery, NO_LOAD, 0.0, 14.2).voltage_v == pytest.approx(12.7)
    battery.inject("dead_cell")
    assert solve_bus(battery, NO_LOAD, 0.0, 14.2).voltage_v == pytest.approx(12.7 * 5 / 6)


def test_terminal_voltage_sags_under_load_by_the_internal_resistance() -> None:
    battery = Battery(BATTERY)
    rested = solve_bus(battery, NO_LOAD, 0.0, 14.2).voltage_v
    loaded = solve_bus(battery, Loads(100.0, 0.0, 0.0), 0.0, 14.2)
    assert rested - loaded.voltage_v == pytest.approx(100.0 * 0.005)
    assert loaded.battery_in_a == pytest.approx(-100.0)
    battery.inject("weak")
    assert rested - solve_bus(battery, Loads(100.0, 0.0, 0.0), 0.0, 14.2).voltage_v > 5.0


def test_regulator_holds_the_setpoint_within_capacity_and_sags_beyond() -> None:
    battery = Battery(BATTERY)
    alternator = Alternator(ALTERNATOR)
    capacity = alternator.capacity_a(800.0)
    assert capacity == pytest.approx(0.45 * 120)
    assert alternator.capacity_a(3000.0) == pytest.approx(120.0)
    assert alternator.capacity_a(0.0) == 0.0
    light = solve_bus(battery, Loads(20.0, 0.0, 0.0), capacity, 14.2)
    assert light.voltage_v == pytest.approx(14.2)
    assert light.battery_in_a > 0.0  # charging
    heavy = solve_bus(battery, Loads(80.0, 0.0, 0.0), capacity, 14.2)
    assert heavy.alternator_a == pytest.approx(capacity)
    assert heavy.voltage_v < 14.2
    assert heavy.battery_in_a < 0.0  # the battery helps out


def test_flat_battery_accepts_more_charge_than_a_full_one() -> None:
    full, empty = Battery(BATTERY), Battery(BATTERY)
    full.soc, empty.soc = 0.95, 0.05
    big = 500.0
    assert (
        solve_bus(empty, NO_LOAD, big, 14.2).battery_in_a
        > 10 * solve_bus(full, NO_LOAD, big, 14.2).battery_in_a
    )


def test_lamps_filament_follows_voltage_led_is_constant_until_dropout() -> None:
    bulb = Lamp(LampConfig(kind="lamp", id="b", function="brake", power_w=21))
    led = Lamp(LampConfig(kind="lamp", id="l", function="tail", technology="led", power_w=4))
    assert bulb.current_at(13.2) == pytest.approx(21 / 13.2)
    assert bulb.current_at(6.6) == pytest.approx(21 / 13.2 / 2)
    assert led.current_at(14.0) == led.current_at(10.8) == pytest.approx(4 / 13.2)
    # Below its regulation voltage the driver runs out of headroom and dims to drop-out.
    assert led.current_at(9.9) == pytest.approx(4 / 13.2 / 2)
    assert led.current_at(8.9) == 0.0
    bulb.inject("degraded")
    assert bulb.current_at(13.2) < 0.8 * 21 / 13.2
    bulb.inject("open_circuit")
    assert bulb.current_at(13.2) == 0.0


def test_battery_charges_while_driving_and_drains_with_key_on() -> None:
    bench = Bench(noise=0.0, ignition=Ignition.RUN)
    bench.car.battery.soc = 0.5
    bench.run(300)
    assert bench.car.battery.soc > 0.5
    bench.car.set_ignition(Ignition.ON)
    before = bench.car.battery.soc
    bench.run(300)
    assert bench.car.battery.soc < before


def test_repair_gives_a_healthy_part() -> None:
    bench = Bench(ignition=Ignition.RUN)
    bench.car.inject("battery", "discharged")
    assert bench.car.failures() == {"battery": {"discharged"}}
    bench.car.repair("battery")
    assert bench.car.failures() == {}
    assert bench.car.battery.soc == pytest.approx(0.85)


def test_drive_profile_is_alive_and_deterministic() -> None:
    seen = {driver_inputs("drive", float(t), Ignition.RUN) for t in range(300)}
    rpms = [inputs.engine_rpm for inputs in seen]
    assert min(rpms) >= 800.0
    assert max(rpms) > 2000.0
    assert len({inputs.lamps_on for inputs in seen}) > 5
    assert driver_inputs("drive", 42.0, Ignition.RUN) == driver_inputs("drive", 42.0, Ignition.RUN)
    assert driver_inputs("drive", 42.0, Ignition.OFF).lamps_on == frozenset()
    assert driver_inputs("drive", 42.0, Ignition.ON).engine_rpm == 0.0


def test_same_seed_same_readings() -> None:
    a, b = Bench(seed=9), Bench(seed=9)
    assert a.run(20).components == b.run(20).components
    c = Bench(seed=10)
    assert c.run(20).components != Bench(seed=9).run(20).components
