"""The client commands and the demo, as a user runs them, against a running daemon and a real
broker."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from carlightd import cli
from carlightd.app.daemon import Service
from carlightd.consumers import client
from carlightd.consumers.terminal import render
from carlightd.core.diagnoser import Fault
from tests.brokers import free_port, subscribed
from tests.conftest import running, service_settings, wait_until
from tests.test_cli import wait_for_line


@pytest.fixture
def daemon_env(broker: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    service = Service(service_settings(*broker, tmp_path))
    monkeypatch.setenv("CARLIGHTD_MQTT__HOST", broker[0])
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", str(broker[1]))
    monkeypatch.setenv("CARLIGHTD_MQTT__BASE_TOPIC", service.settings.mqtt.base_topic)
    return service


async def cli_main(*argv: str) -> int:
    # The CLI runs its own event loop, so it runs in a thread of its own here.
    return await asyncio.to_thread(cli.main, list(argv))


async def test_client_commands(daemon_env: Service, capfd: pytest.CaptureFixture[str]) -> None:
    service = daemon_env
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        assert await cli_main("inject", "brake_left", "open_circuit") == 0
        assert 'inject_fault: ok {"component": "brake_left"' in capfd.readouterr().out
        async with asyncio.timeout(10):
            while not any(f.status == "confirmed" for f in _faults(service)):
                await asyncio.sleep(0.05)
        # The broker must hold the confirmed list before the client reads it back.
        await wait_until(lambda: service.publisher.backlog == 0)
        assert await cli_main("faults") == 0
        out = capfd.readouterr().out
        assert "warning lamps: bulb" in out
        assert "B1200  confirmed  brake_left" in out
        assert await cli_main("inject", "brake_left", "dead_cell") == 1
        assert "a lamp cannot have failure 'dead_cell'" in capfd.readouterr().err
        assert await cli_main("repair", "brake_left") == 0
        assert await cli_main("ignition", "on") == 0
        assert service.daemon.car.ignition == "on"
        assert await cli_main("clear") == 0
        assert "clear_faults: ok" in capfd.readouterr().out
        with pytest.raises(SystemExit) as usage:  # argparse: a usage error
            await cli_main("ignition", "sideways")
        assert usage.value.code == 2


def _faults(service: Service) -> list[Fault]:
    report = service.daemon.runner.last_report
    return list(report.faults) if report else []


async def test_watch_prints_events_as_they_happen(daemon_env: Service) -> None:
    service = daemon_env
    out = io.StringIO()
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        watching = asyncio.create_task(
            client.watch(service.settings, out, until=lambda: "fault_confirmed" in out.getvalue())
        )
        await wait_until(lambda: "watching " in out.getvalue())  # printed once subscribed
        service.daemon.car.inject("reverse", "short_circuit")
        try:
            async with asyncio.timeout(10):
                await watching
        except TimeoutError:
            raise AssertionError(out.getvalue()) from None
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("watching ")
    assert any("fault_pending" in line and "reverse short_circuit B1201" in line for line in lines)
    assert any("fault_confirmed" in line for line in lines)


async def test_no_daemon_and_no_broker_are_clear_errors(
    tmp_path: Path,
    broker: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CARLIGHTD_MQTT__HOST", broker[0])
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", str(broker[1]))
    monkeypatch.setenv("CARLIGHTD_MQTT__BASE_TOPIC", "nobody-home")
    assert await cli_main("faults") == 1
    assert "nothing published for vehicle 'demo-car'" in capfd.readouterr().err
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", str(free_port()))
    assert await cli_main("repair", "battery") == 1
    assert "cannot reach the MQTT broker" in capfd.readouterr().err


@pytest.mark.parametrize("with_broker", [False, True], ids=["embedded-broker", "existing-broker"])
async def test_demo_runs_breaks_parts_and_stops_on_ctrl_c(
    tmp_path: Path, broker: tuple[str, int], with_broker: bool
) -> None:
    host, port = broker if with_broker else ("127.0.0.1", free_port())
    base = f"demo-{os.getpid()}-{port}"
    env = {
        **os.environ,
        "CARLIGHTD_MQTT__HOST": host,
        "CARLIGHTD_MQTT__PORT": str(port),
        "CARLIGHTD_MQTT__BASE_TOPIC": base,
        "CARLIGHTD_DIAGNOSTICS__CONFIRM_CYCLES": "1",
    }
    with subprocess.Popen(  # noqa: ASYNC220 - the demo must run as its own process
        [sys.executable, "-m", "carlightd", "demo", "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as proc:
        try:
            wait_for_line(proc, "mqtt_connected", timeout_s=15)
            async with subscribed(host, port, f"{base}/demo-car/#") as sub:
                faults = f"{base}/demo-car/faults"
                await sub.wait_for(
                    lambda: any(f["faults"] for f in sub.json_on(faults)), 15.0, "a scripted fault"
                )
                assert sub.on(f"{base}/demo-car/availability")[-1] == b"online"
                proc.send_signal(signal.SIGINT)
                assert await asyncio.to_thread(proc.wait, 5) == 0
        finally:
            proc.kill()
        assert proc.stdout is not None
        out = proc.stdout.read()
    assert "mosquitto_sub" in out
    assert "Dashboard: http://127.0.0.1:" in out
    assert ("embedded" in out) is not with_broker


async def test_live_watch_table_shows_parts_faults_and_events(daemon_env: Service) -> None:
    service = daemon_env
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=140, color_system=None)
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        service.daemon.car.inject("headlamp_right", "degraded")
        state = await asyncio.wait_for(
            client.watch_live(
                service.settings,
                console,
                until=lambda s: any(e.type == "fault_confirmed" for e in s.events),
            ),
            15,
        )
    assert state.availability == "online"
    assert state.components["headlamp_right"].status in ("pending", "failed")
    plain = Console(file=io.StringIO(), width=140, color_system=None)
    plain.print(render(state))
    text = plain.file.getvalue()  # type: ignore[attr-defined]
    assert "headlamp_right" in text
    assert "degraded" in text
    assert "B1202" in text
    assert "fault_confirmed" in text
    assert "online" in text
