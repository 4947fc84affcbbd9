"""The simulated car's sensor bus: one poll per cycle, a silent controller costs exactly the read
timeout, a broken driver is a missing reading (never an exception out of the poll)."""

from __future__ import annotations

import asyncio
import time

import pytest

from carlightd.core.kinds.lamp import LampReading
from carlightd.core.selftests import NO_READING
from carlightd.sources.simulated.readout import SimulatedSensorBus
from tests.simulate import Bench, read_now


async def test_a_poll_reads_every_part_as_the_car_is_now() -> None:
    bench = Bench(seed=3, noise=0.0)
    bus = SimulatedSensorBus(bench.car)
    readings = await bus.read_all(bench.car.parts, timeout_s=5.0)
    assert set(readings) == set(bench.car.parts)
    assert readings == read_now(bench.car)  # no noise: the same values a direct read gives
    assert isinstance(readings["brake_left"], LampReading)


async def test_a_silent_controller_leaves_its_parts_unread_after_the_timeout() -> None:
    bench = Bench()
    bench.car.inject("bcm", "no_response")
    bus = SimulatedSensorBus(bench.car)
    started = time.monotonic()
    async with asyncio.timeout(10):  # ends by the read timeout, or this fails
        readings = await bus.read_all(bench.car.parts, timeout_s=0.1)
    assert time.monotonic() - started >= 0.09  # the requests really were left to time out
    assert readings["bcm"] is NO_READING
    assert readings["brake_left"] is NO_READING  # measured by the silent controller
    assert readings["battery"] is not NO_READING  # read directly, not through it


async def test_a_driver_that_raises_is_a_missing_reading(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    bench = Bench()
    real_measure = bench.car.measure

    def measure(part_id: str) -> object:
        if part_id == "reverse":
            raise RuntimeError("driver bug")
        return real_measure(part_id)

    monkeypatch.setattr(bench.car, "measure", measure)
    readings = await SimulatedSensorBus(bench.car).read_all(bench.car.parts, timeout_s=1.0)
    assert readings["reverse"] is NO_READING
    assert sum(1 for r in readings.values() if r is NO_READING) == 1
    out, err = capfd.readouterr()
    assert "sensor_read_failed" in out + err  # logged (where depends on the log setup)
