"""`carlightd fleet`: distinct cars, each with the whole contract, in one process or several."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from carlightd.tools.fleet import run_shard, vehicle_settings
from tests.brokers import subscribed
from tests.conftest import service_settings


def test_each_car_is_its_own_vehicle(tmp_path: Path) -> None:
    base = service_settings("127.0.0.1", 1883, tmp_path)
    cars = [vehicle_settings(base, i) for i in range(3)]
    assert [c.vehicle.id for c in cars] == ["demo-car-0000", "demo-car-0001", "demo-car-0002"]
    assert len({c.simulation.seed for c in cars}) == 3
    assert len({c.diagnostics.state_dir for c in cars}) == 3
    assert not any(c.homeassistant.discovery for c in cars)


async def test_a_small_fleet_publishes_every_car(broker: tuple[str, int], tmp_path: Path) -> None:
    base = service_settings(*broker, tmp_path)
    root = base.mqtt.base_topic
    async with subscribed(*broker, f"{root}/+/availability") as sub:
        stats = await run_shard(base, [0, 1, 2], seconds=1.5, fault_rate=5.0)
        await sub.wait_for(lambda: len({t for t, _, _ in sub.messages}) == 3, what="3 cars")
    assert {t.split("/")[1] for t, _, _ in sub.messages} == {
        "demo-car-0000",
        "demo-car-0001",
        "demo-car-0002",
    }
    assert stats.vehicles == 3
    assert stats.cycles >= 3 * 10
    assert stats.published > 3 * 20  # the whole contract, for every car
    assert stats.events > 0  # the chaos broke parts


@pytest.mark.parametrize("processes", [1, 2])
def test_fleet_command(broker: tuple[str, int], tmp_path: Path, processes: int) -> None:
    env = {
        **os.environ,
        "CARLIGHTD_MQTT__HOST": broker[0],
        "CARLIGHTD_MQTT__PORT": str(broker[1]),
        "CARLIGHTD_MQTT__BASE_TOPIC": f"fleet-{uuid.uuid4().hex[:8]}",
        "CARLIGHTD_DIAGNOSTICS__STATE_DIR": str(tmp_path),
        "CARLIGHTD_DIAGNOSTICS__CYCLE_S": "0.2",
        "CARLIGHTD_DIAGNOSTICS__READ_TIMEOUT_S": "0.05",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carlightd",
            "fleet",
            "--vehicles",
            "4",
            "--processes",
            str(processes),
            "--seconds",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["vehicles"] == 4
    assert stats["cycles"] >= 4 * 5
    assert stats["msgs_per_s"] > 0


def test_fleet_refuses_nonsense() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "carlightd", "fleet", "--vehicles", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--vehicles" in result.stderr
