"""Reload (SIGHUP) and the health check: a bad configuration is refused and the old one stays;
a good one applies without losing the fault memory or the connection; the heartbeat is judged."""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from carlightd import cli, config
from carlightd.app import health
from carlightd.app.daemon import Service
from carlightd.outputs.mqtt import homeassistant
from tests.brokers import PrivateBroker, subscribed
from tests.conftest import running, service_settings, wait_until


def write_config(path: Path, settings: config.Settings, **changes: dict[str, Any]) -> None:
    raw = tomllib.loads(config.packaged_default().read_text())
    raw["mqtt"].update(
        host=settings.mqtt.host, port=settings.mqtt.port, base_topic=settings.mqtt.base_topic
    )
    raw["diagnostics"].update(
        {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in settings.diagnostics.model_dump().items()
        }
    )
    raw["simulation"]["profile"] = settings.simulation.profile
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(raw))


async def test_reload_applies_a_good_config_and_refuses_a_bad_one(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    path = tmp_path / "car.toml"
    write_config(path, settings)
    service = Service(config.load(path), config_path=path)
    memory = service.daemon.diagnoser.memory
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        service.daemon.car.inject("reverse", "open_circuit")
        await wait_until(lambda: ("reverse", "open_circuit") in memory.records)

        # A bad file: refused, everything as before.
        path.write_text("[diagnostics]\nconfirm_cycles = 0\n")
        assert service.reload() is False
        assert memory.confirm_cycles == 2

        # A good one: new debounce and period, same memory, same connection.
        write_config(
            path,
            settings,
            diagnostics={"confirm_cycles": 5, "cycle_s": 0.2},
            commands={"enabled": False},
        )
        assert service.reload() is True
        assert memory.confirm_cycles == 5
        assert service.daemon.runner.cycle_s == 0.2
        assert service.handler.enabled is False
        assert ("reverse", "open_circuit") in memory.records
        assert service.publisher.connections == 1
        assert service.publisher.connected


@pytest.mark.scan_tool
async def test_reload_takes_a_new_vin_and_keeps_the_scan_tool_servers_until_a_restart(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    path = tmp_path / "car.toml"
    scan_tool = {"doip": True, "doip_port": 0, "elm327": False}
    write_config(path, settings, scan_tool=scan_tool)
    service = Service(config.load(path), config_path=path)
    async with running(service):
        await wait_until(lambda: "doip" in service.scan_tool.endpoints)
        where = service.scan_tool.endpoints["doip"]
        assert await service.scan_tool.uds.handle(b"\x22\xf1\x90") == (
            b"\x62\xf1\x90" + b"CLDSMLT12V0000043"
        )
        write_config(
            path,
            settings,
            vehicle={"vin": "WDB12345678901234"},
            scan_tool={**scan_tool, "elm327": True},
        )
        assert service.reload() is True
        # The VIN at once, through the same server; the servers stay as they were.
        assert await service.scan_tool.uds.handle(b"\x22\xf1\x90") == (
            b"\x62\xf1\x90" + b"WDB12345678901234"
        )
        assert service.scan_tool.endpoints == {"doip": where}
        assert service.settings.scan_tool.elm327 is False  # kept until a restart


async def test_reload_with_new_broker_settings_moves_the_connection(
    broker: tuple[str, int], tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    path = tmp_path / "car.toml"
    write_config(path, settings)
    service = Service(config.load(path), config_path=path)
    other = private_broker()
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        service.daemon.car.inject("tail_left", "degraded")
        await wait_until(lambda: bool(service.daemon.diagnoser.memory.records))
        async with subscribed("127.0.0.1", other.port, f"{root}/#") as sub:
            write_config(path, settings, mqtt={"port": other.port, "host": "127.0.0.1"})
            assert service.reload()
            await sub.wait_for(lambda: sub.on(f"{root}/availability") == [b"online"])
            await sub.wait_for(
                lambda: any(f["faults"] for f in sub.json_on(f"{root}/faults")), what="faults"
            )
        assert service.publisher.connections == 2
        assert ("tail_left", "degraded") in service.daemon.diagnoser.memory.records


async def test_reload_with_new_components_swaps_the_car_and_keeps_what_still_applies(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    path = tmp_path / "car.toml"
    prefix = f"ha-{uuid.uuid4().hex[:8]}"  # this test's own Home Assistant
    write_config(path, settings, homeassistant={"prefix": prefix})
    service = Service(config.load(path), config_path=path)
    memory = service.daemon.diagnoser.memory
    root = service.publisher.topics.root
    discovery = f"{prefix}/device/{homeassistant.node_id('demo-car')}/config"
    async with running(service), subscribed(*broker, f"{root}/#") as sub:
        await wait_until(lambda: service.publisher.connected)
        service.daemon.car.inject("reverse", "open_circuit")
        service.daemon.car.inject("tail_left", "degraded")
        await wait_until(
            lambda: {("reverse", "open_circuit"), ("tail_left", "degraded")} <= set(memory.records)
        )
        await sub.wait_for(lambda: bool(sub.on(f"{root}/components/reverse")), what="reverse")

        # The new car has no reversing lamp and a rear fog lamp on the rear controller.
        raw = tomllib.loads(path.read_text())
        # (The reversing lamp also leaves the fuse and the ground point it was wired to.)
        for part in raw["components"]:
            for wires in ("feeds", "serves"):
                if wires in part:
                    part[wires] = [lamp for lamp in part[wires] if lamp != "reverse"]
        raw["components"] = [c for c in raw["components"] if c["id"] != "reverse"] + [
            {
                "kind": "lamp",
                "id": "fog_rear",
                "function": "tail",
                "power_w": 21,
                "controller": "bcm",
            }
        ]
        path.write_text(tomli_w.dumps(raw))
        assert service.reload() is True

        await wait_until(lambda: "fog_rear" in service.daemon.car.parts)
        assert "reverse" not in service.daemon.car.parts
        await wait_until(lambda: ("reverse", "open_circuit") not in memory.records)
        assert ("tail_left", "degraded") in memory.records  # still the same part: remembered
        assert service.publisher.connections == 1  # the connection was kept
        # Subscribers hear that the reversing lamp's fault is gone, and its retained topic goes.
        await sub.wait_for(
            lambda: any(
                e["type"] == "fault_cleared" and e["component"] == "reverse"
                for e in sub.json_on(f"{root}/events")
            ),
            what="fault_cleared for reverse",
        )
        await sub.wait_for(
            lambda: sub.on(f"{root}/components/reverse")[-1:] == [b""], what="removed"
        )
        await sub.wait_for(lambda: bool(sub.on(f"{root}/components/fog_rear")), what="fog_rear")
        fog = json.loads(sub.on(f"{root}/components/fog_rear")[-1])
        assert fog["kind"] == "lamp"
    # Home Assistant is told to drop the reversing lamp's entity and to add the fog lamp's.
    async with subscribed(*broker, discovery) as ha:
        await ha.wait_for(lambda: bool(ha.on(discovery)), what="discovery")
        components = json.loads(ha.on(discovery)[-1])["components"]
    assert components["reverse_problem"] == {"platform": "binary_sensor"}
    assert components["fog_rear_problem"]["device_class"] == "problem"


def test_reload_keeps_the_identity_of_the_running_car(tmp_path: Path) -> None:
    settings = service_settings("127.0.0.1", 1, tmp_path / "state")
    path = tmp_path / "car.toml"
    write_config(path, settings)
    service = Service(config.load(path), config_path=path)
    write_config(path, settings, vehicle={"id": "another-car"})
    assert service.reload()
    assert service.settings.vehicle.id == "demo-car"


def beat(age_s: float, cycle_s: float = 1.0) -> health.Heartbeat:
    return health.Heartbeat(datetime.now(UTC) - timedelta(seconds=age_s), 42, cycle_s, True, 1)


def test_health_check_judges_the_heartbeat(tmp_path: Path) -> None:
    with pytest.raises(health.Unhealthy, match="no heartbeat"):
        health.check(tmp_path)
    health.write(tmp_path, beat(1.0))
    assert health.check(tmp_path).startswith("healthy: cycle 42")
    health.write(tmp_path, beat(30.0))
    with pytest.raises(health.Unhealthy, match="the loop is stuck"):
        health.check(tmp_path)
    (tmp_path / health.HEARTBEAT_FILE).write_text("{not json")
    with pytest.raises(health.Unhealthy, match="unreadable"):
        health.check(tmp_path)


async def test_health_command_against_a_running_daemon(
    broker: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = Service(service_settings(*broker, tmp_path))
    monkeypatch.setenv("CARLIGHTD_DIAGNOSTICS__STATE_DIR", str(tmp_path))
    async with running(service):
        await wait_until((tmp_path / health.HEARTBEAT_FILE).exists)
        assert cli.main(["health"]) == 0
        assert "healthy: cycle" in capsys.readouterr().out
        stored = json.loads((tmp_path / health.HEARTBEAT_FILE).read_text())
        assert stored["cycle_s"] == 0.1
    stale = beat(60.0)
    health.write(tmp_path, stale)
    assert cli.main(["health"]) == 1
    assert "unhealthy" in capsys.readouterr().err


async def test_heartbeat_from_the_first_cycle_in_a_new_state_dir(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    state_dir = tmp_path / "not" / "yet" / "there"
    service = Service(service_settings(*broker, state_dir))
    async with running(service):
        await wait_until(lambda: service.daemon.diagnoser.cycle >= 2)
        assert health.check(state_dir).startswith("healthy: cycle")


def test_health_names_a_state_that_is_not_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = f"cannot save {tmp_path}/fault-memory.json: [Errno 28] No space left on device"
    fresh = health.Heartbeat(datetime.now(UTC), 42, 1.0, True, 1, state_problem=problem)
    health.write(tmp_path, fresh)
    with pytest.raises(health.Unhealthy) as verdict:
        health.check(tmp_path)
    assert str(verdict.value) == f"state not saved: {problem}"
    monkeypatch.setenv("CARLIGHTD_DIAGNOSTICS__STATE_DIR", str(tmp_path))
    assert cli.main(["health"]) == 1
    assert capsys.readouterr().err == f"carlightd: unhealthy: state not saved: {problem}\n"


def test_a_stale_heartbeat_is_not_called_a_stuck_loop_for_sure(tmp_path: Path) -> None:
    health.write(tmp_path, beat(30.0))
    with pytest.raises(health.Unhealthy) as verdict:
        health.check(tmp_path)
    # The loop may run and fail to write (a read-only disk is named when it is one: see
    # test_disk_trouble.py); on a disk with room and writable, both causes remain possible.
    assert str(verdict.value) == (
        "heartbeat is 30 s old (limit 10 s): the loop is stuck or the state directory is not "
        "writable"
    )


def test_the_heartbeat_is_overwritten_in_place_at_one_size(tmp_path: Path) -> None:
    path = tmp_path / health.HEARTBEAT_FILE
    path.write_text(
        '{"at": "2026-01-01T00:00:00+00:00", "cycle": 1, "cycle_s": 1.0,'
        ' "mqtt_connected": true, "faults": 0}'
    )  # an older daemon's, shorter
    assert health.read(path).state_problem is None
    inode = path.stat().st_ino
    health.write(tmp_path, beat(0.0))
    health.write(tmp_path, health.Heartbeat(datetime.now(UTC), 43, 1.0, False, 2, "x" * 50))
    # The same file, never replaced, never resized: once it exists, a write needs no disk space.
    assert path.stat().st_ino == inode
    assert path.stat().st_size == health.SIZE
    assert health.read(path) == health.Heartbeat(health.read(path).at, 43, 1.0, False, 2, "x" * 50)
    path.write_bytes(b" " * (health.SIZE * 3))  # longer than it should be: cut to size
    health.write(tmp_path, beat(0.0))
    assert path.stat().st_size == health.SIZE
    assert not list(tmp_path.glob(".*"))  # no temporary file


def test_a_very_long_state_problem_is_cut_to_fit(tmp_path: Path) -> None:
    problem = "cannot save /" + "é" * 5000 + ": [Errno 28] No space left on device"
    health.write(tmp_path, health.Heartbeat(datetime.now(UTC), 1, 1.0, True, 0, problem))
    stored = health.read(tmp_path / health.HEARTBEAT_FILE)
    assert stored.state_problem is not None
    assert stored.state_problem.startswith("cannot save /éé")
    assert stored.state_problem.endswith("…")
    assert (tmp_path / health.HEARTBEAT_FILE).stat().st_size == health.SIZE
