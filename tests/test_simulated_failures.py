"""The simulated car holds several failures per part (DESIGN §2): a second never mends the first,
`repair` mends them all, and where two interact the part does what its module documents. Any
failure can be intermittent: present in a seeded fraction p of cycles, within binomial tolerance."""

from __future__ import annotations

import itertools
import math

import pytest

from carlightd.core.domain import SENSOR_FAULT, Ignition
from carlightd.core.kinds import FAILURES
from carlightd.core.kinds.lamp import LampReading
from carlightd.sources.simulated.car import Car
from carlightd.sources.simulated.parts.alternator import Alternator
from carlightd.sources.simulated.parts.battery import DISCHARGED_SOC, Battery
from carlightd.sources.simulated.parts.lamp import Lamp
from tests.simulate import settings

COMPONENTS = settings().components


def car(seed: int = 1, noise: float = 1.0) -> Car:
    return Car(COMPONENTS, seed=seed, noise=noise, ignition=Ignition.RUN, profile="steady")


def lamp_reading(c: Car, part_id: str = "brake_left") -> LampReading:
    reading = c.measure(part_id)
    assert isinstance(reading, LampReading)
    return reading


def test_a_lamp_holds_a_broken_sense_and_a_blown_bulb_and_repair_mends_both() -> None:
    c = car()
    c.inject("brake_left", SENSOR_FAULT)
    c.inject("brake_left", "open_circuit")  # was: this silently repaired the sensor
    assert c.failures() == {"brake_left": {SENSOR_FAULT, "open_circuit"}}
    lamp = c.parts["brake_left"]
    assert isinstance(lamp, Lamp)
    assert lamp.conductance == 0.0  # the bulb is out
    assert lamp.constant_current_a == 0.0
    broken = lamp_reading(c).current_a
    assert broken in (-1.5, 25.5)  # and the sense line is still broken
    c.repair("brake_left")
    assert c.failures() == {}
    assert c.present() == {}
    assert lamp.conductance > 0.0 or lamp.constant_current_a > 0.0
    assert 0.0 < lamp_reading(c).current_a < 25.0


@pytest.mark.parametrize("part_id", ["brake_left", "battery", "alternator", "bcm"])
def test_every_second_failure_is_held_beside_the_first(part_id: str) -> None:
    kind = car().kinds[part_id]
    for first, second in itertools.permutations(FAILURES[kind], 2):
        c = car()
        c.inject(part_id, first)
        c.inject(part_id, second)
        assert c.failures() == {part_id: {first, second}}, (first, second)
        assert c.present() == {part_id: {first, second}}
        c.advance(1.0)  # standing failures stay through the cycles
        assert c.present() == {part_id: {first, second}}
        c.repair(part_id)
        assert c.failures() == {}, (first, second)


def test_where_two_failures_interact_the_documented_one_wins() -> None:
    c = car()
    # A short trips the driver whatever the bulb does, before or after the open bulb.
    c.inject("brake_left", "open_circuit")
    c.inject("brake_left", "short_circuit")
    assert lamp_reading(c).overcurrent
    c.inject("tail_left", "short_circuit")
    c.inject("tail_left", SENSOR_FAULT)
    assert lamp_reading(c, "tail_left").overcurrent  # the trip flag is not the broken sense
    # A full field ignores a set-point drifted low, in either order.
    for order in (("undercharging", "overcharging"), ("overcharging", "undercharging")):
        c = car()
        for failure in order:
            c.inject("alternator", failure)
        alternator = c.parts["alternator"]
        assert isinstance(alternator, Alternator)
        # +1.6 V above what the engine computer commands (smart charging moves the command).
        assert alternator.setpoint_v == pytest.approx(alternator.commanded_v + 1.6)
    # A battery's failures add up: five cells of six and twelve times the resistance.
    c = car()
    battery = c.parts["battery"]
    assert isinstance(battery, Battery)
    emf, resistance = battery.emf, battery.discharge_resistance
    c.inject("battery", "dead_cell")
    c.inject("battery", "weak")
    assert battery.emf == pytest.approx(emf * 5 / 6)
    assert battery.discharge_resistance == pytest.approx(resistance * 12)


def test_a_sensor_broken_again_keeps_the_way_it_broke() -> None:
    c = car()
    c.inject("brake_left", SENSOR_FAULT)
    before = lamp_reading(c).current_a
    for _ in range(5):
        c.inject("brake_left", SENSOR_FAULT)
        assert lamp_reading(c).current_a == before


def presence(c: Car, part_id: str, failure: str, cycles: int) -> list[bool]:
    seen = []
    for _ in range(cycles):
        c.advance(1.0)
        seen.append(failure in c.present().get(part_id, frozenset()))
    return seen


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_an_intermittent_failure_is_present_in_a_fraction_p_of_cycles(p: float) -> None:
    cycles = 2000
    c = car()
    c.inject("brake_left", "open_circuit", intermittent=p)
    assert c.failures() == {"brake_left": {"open_circuit"}}  # held in every cycle
    seen = presence(c, "brake_left", "open_circuit", cycles)
    # Binomial: mean N p, standard deviation sqrt(N p (1 - p)); 4 sigma either side.
    sigma = math.sqrt(cycles * p * (1 - p))
    assert abs(sum(seen) - cycles * p) <= 4 * sigma, (sum(seen), cycles * p, sigma)
    # It comes and goes (not one long run): both changes happen often.
    changes = sum(a != b for a, b in itertools.pairwise(seen))
    assert changes >= 2 * cycles * p * (1 - p) * 0.8


def test_intermittence_is_the_same_for_a_seed_and_differs_between_seeds() -> None:
    def run(seed: int) -> list[bool]:
        c = car(seed)
        c.inject("brake_left", "open_circuit", intermittent=0.5)
        return presence(c, "brake_left", "open_circuit", 200)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_an_intermittent_failure_acts_only_in_the_cycles_it_is_present() -> None:
    c = car()
    c.inject("brake_left", "open_circuit", intermittent=0.5)
    c.inject("brake_left", "degraded")  # standing, beside it
    absent_currents, present_currents = [], []
    for _ in range(200):
        c.advance(1.0)
        current = lamp_reading(c).current_a
        if "open_circuit" in c.present()["brake_left"]:
            present_currents.append(current)
        else:
            absent_currents.append(current)
        assert "degraded" in c.present()["brake_left"]  # the standing one never leaves
    assert present_currents
    assert absent_currents
    assert max(present_currents) < 0.05  # bulb out: nothing flows
    assert min(absent_currents) > 0.5  # only dim
    c.repair("brake_left")
    assert c.failures() == {}
    assert presence(c, "brake_left", "open_circuit", 50) == [False] * 50


def test_a_standing_injection_makes_an_intermittent_failure_standing_again() -> None:
    c = car()
    c.inject("alternator", "no_output", intermittent=0.2)
    c.inject("alternator", "no_output")
    assert presence(c, "alternator", "no_output", 100) == [True] * 100


def test_an_intermittent_discharge_sets_the_charge_aside_in_the_cycles_it_is_present() -> None:
    c = car()
    battery = c.parts["battery"]
    assert isinstance(battery, Battery)
    c.inject("battery", "discharged", intermittent=0.5)
    emfs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(100):
        c.advance(1.0)
        emfs["discharged" in c.present().get("battery", frozenset())].append(battery.emf)
    assert battery.soc > 0.5  # the charge it holds was never drained
    assert max(emfs[True]) < min(emfs[False])
    flat = Battery(battery.config)
    flat.soc = DISCHARGED_SOC
    assert emfs[True][0] == pytest.approx(flat.emf)


@pytest.mark.parametrize(
    "bad", [0, 1, -1, 0.0, 1.0, 1.5, float("inf"), float("-inf"), float("nan"), "x", True]
)
def test_a_presence_outside_zero_to_one_is_refused_naming_intermittent(bad: object) -> None:
    c = car()
    with pytest.raises(ValueError, match=r"^intermittent: "):
        c.inject("brake_left", "open_circuit", intermittent=bad)  # type: ignore[arg-type]
    assert c.failures() == {}
