"""A healthy car never raises a fault: thousands of seeded noisy cycles, every key position, every
state of charge a healthy battery can have, both drive profiles, the highest noise allowed."""

from __future__ import annotations

import pytest

from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds.lamp import LampReading
from tests.simulate import Bench


@pytest.mark.parametrize("ignition", list(Ignition))
@pytest.mark.parametrize("soc", [0.35, 0.55, 0.8, 1.0])
@pytest.mark.parametrize(("profile", "noise"), [("drive", 1.0), ("drive", 2.0), ("steady", 2.0)])
def test_healthy_car_never_fails(
    ignition: Ignition, soc: float, profile: str, noise: float
) -> None:
    bench = Bench(
        seed=int(soc * 100) + len(profile),
        noise=noise,
        ignition=ignition,
        profile="drive" if profile == "drive" else "steady",
    )
    bench.car.battery.soc = soc
    lowest_bus = 99.0
    tested = 0
    for _ in range(600):
        report = bench.cycle()
        assert report.faults == [], (report.cycle, report.faults)
        lowest_bus = min(lowest_bus, bench.car.snapshot().bus_v)
        tested += sum(1 for r in report.components.values() if r.status == "ok")
    # The run really exercised the tests: most parts were judged, not skipped.
    assert tested >= 600 * (1 if ignition is Ignition.OFF else 10)
    assert lowest_bus > 10.0


def test_the_drive_profile_covers_every_lamp_on_and_off() -> None:
    bench = Bench(ignition=Ignition.RUN)
    seen_on: set[str] = set()
    seen_off: set[str] = set()
    for _ in range(300):
        report = bench.cycle()
        for part_id, state in report.components.items():
            if isinstance(state.reading, LampReading):
                (seen_on if state.reading.commanded_on else seen_off).add(part_id)
    lamps = {pid for pid, kind in bench.car.kinds.items() if kind is Kind.LAMP}
    assert seen_on == lamps
    assert seen_off == lamps


def test_off_lamps_are_pulse_tested() -> None:
    bench = Bench(ignition=Ignition.ON, profile="steady")
    report = bench.cycle()
    reverse = report.components["reverse"]
    assert isinstance(reverse.reading, LampReading)
    assert reverse.reading.pulsed
    assert reverse.status == "ok"
    bench.car.inject("reverse", "open_circuit")
    assert bench.cycle().components["reverse"].status == "pending"


def test_every_part_untested_for_a_reason_when_it_cannot_be_judged() -> None:
    report = Bench(ignition=Ignition.OFF).run(3)
    for state in report.components.values():
        if state.status == "untested":
            assert state.reason
    assert report.components["alternator"].reason == "engine not running"
    assert report.components["headlamp_left"].reason == "ignition off: controller asleep"
    assert report.components["battery"].status == "ok"  # the battery sensor never sleeps
