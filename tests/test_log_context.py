"""Every line a daemon writes names its vehicle, also when many daemons share one process and one
event loop (a fleet): the vehicle is bound in each daemon's own task (structlog contextvars).

The lines are read through the real pipeline (`logs.configure`, JSON), so the standard-library
loggers' lines and those of every child task (cycle, MQTT) are covered, not only structlog's.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from carlightd import logs
from carlightd.app.daemon import Service
from carlightd.store.state import STATE_FILE
from carlightd.tools.fleet import run_shard
from tests.brokers import free_port
from tests.conftest import running, service_settings, wait_until


class Lines:
    """The JSON lines written since `logs.configure`, parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.all() if line["event"] == event]


@pytest.fixture
def json_lines() -> Lines:
    logs.configure(json=True, level="INFO")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return Lines(stream)  # conftest puts logging back as it was


async def test_two_daemons_in_one_loop_each_name_their_own_vehicle(
    broker: tuple[str, int], tmp_path: Path, json_lines: Lines
) -> None:
    # A reaches the broker and has a broken tail lamp; B has no broker (a closed port) and a
    # broken headlamp: each kind of line below can come from one of them only.
    closed = free_port()
    # Built as the entry points build them (`daemon.run`, the fleet): in the car's log context,
    # so the lines written while building name it too; `run` then binds it in its own task.
    with logs.vehicle_bound("car-a"):
        a = Service(service_settings(*broker, tmp_path / "a", vehicle__id="car-a"))
    with logs.vehicle_bound("car-b"):
        b = Service(service_settings("127.0.0.1", closed, tmp_path / "b", vehicle__id="car-b"))
    a.daemon.car.inject("tail_left", "open_circuit")
    b.daemon.car.inject("headlamp_right", "open_circuit")
    async with running(a), running(b):
        await wait_until(
            lambda: (
                bool(json_lines.events("mqtt_connected"))
                and bool(json_lines.events("mqtt_connect_failed"))
                and len(json_lines.events("fault_confirmed")) >= 2
            )
        )
    lines = json_lines.all()
    assert lines, "nothing was logged"
    unnamed = [line for line in lines if line.get("vehicle") not in ("car-a", "car-b")]
    assert unnamed == [], f"lines without their vehicle: {unnamed[:3]}"
    # The MQTT task's lines (a child task of each daemon's own task).
    assert {line["vehicle"] for line in json_lines.events("mqtt_connected")} == {"car-a"}
    failed = json_lines.events("mqtt_connect_failed")
    assert {(line["vehicle"], line["port"]) for line in failed} == {("car-b", closed)}
    # The cycle task's lines.
    confirmed = {
        (line["vehicle"], line["component"]) for line in json_lines.events("fault_confirmed")
    }
    assert confirmed == {("car-a", "tail_left"), ("car-b", "headlamp_right")}
    for line in json_lines.events("started") + json_lines.events("stopped"):
        assert line["vehicle"] in ("car-a", "car-b")
    roots = {line["vehicle"]: line["root"] for line in json_lines.events("started")}
    assert roots["car-a"].endswith("/car-a")
    assert roots["car-b"].endswith("/car-b")


async def test_each_fleet_car_names_itself_and_the_fleet_names_none(
    broker: tuple[str, int], tmp_path: Path, json_lines: Lines
) -> None:
    base = service_settings(*broker, tmp_path)
    cars = ["demo-car-0000", "demo-car-0001", "demo-car-0002"]
    # Car 1's state file is garbage: the line that says so is written while the car is built,
    # before any task of its own exists.
    broken = Path(base.diagnostics.state_dir) / "fleet" / cars[1]
    broken.mkdir(parents=True)
    (broken / STATE_FILE).write_text("not json")
    stats = await run_shard(base, [0, 1, 2], seconds=1.5, fault_rate=10.0)
    assert stats.events > 0, "the chaos broke nothing: the fault lines below prove nothing"
    lines = json_lines.all()
    rejected = json_lines.events("state_rejected")
    assert [line.get("vehicle") for line in rejected] == [cars[1]]
    fleet = [line for line in lines if line["logger"] == "carlightd.fleet"]
    assert fleet, "the fleet wrote no summary line"
    assert [line for line in fleet if "vehicle" in line] == [], "a fleet line names one car"
    cars_lines = [line for line in lines if line["logger"] != "carlightd.fleet"]
    unnamed = [line for line in cars_lines if line.get("vehicle") not in cars]
    assert unnamed == [], f"lines without their vehicle: {unnamed[:3]}"
    assert {line["vehicle"] for line in json_lines.events("mqtt_connected")} == set(cars)
    for line in json_lines.events("started"):
        assert line["root"].endswith(f"/{line['vehicle']}")
    # Each car numbers its own events from 1: had lines been named after the wrong car, one car
    # would show a number twice.
    seqs: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        if line["event"] in ("fault_pending", "fault_confirmed", "fault_cleared"):
            seqs[line["vehicle"]].append(line["seq"])
    assert seqs, "no fault line was written"
    for vehicle, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), (vehicle, numbers)
