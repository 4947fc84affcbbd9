"""systemd integration: the sd_notify protocol over a real datagram socket, the watchdog that only
pings while cycles complete on time, and the unit file checked by systemd-analyze."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from carlightd.app.daemon import Service
from carlightd.app.systemd import Notifier
from carlightd.core.diagnoser import CycleReport
from tests.conftest import running, service_settings, wait_until

UNIT = Path(__file__).parents[1] / "systemd" / "carlightd.service"


class NotifySocket:
    """What systemd listens on: a unix datagram socket; `@name` is the abstract namespace."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def count(self, field: str) -> int:
        return sum(1 for message in self.drain() for f in message.split("\n") if f == field)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock = NotifySocket(path, path)
    else:
        name = f"carlightd-test-{uuid.uuid4().hex}"
        sock = NotifySocket(f"@{name}", f"\0{name}")
    yield sock
    sock.sock.close()


def test_notifier_speaks_the_protocol(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"})
    assert notifier.enabled
    assert notifier.watchdog_s == 2.0
    notifier.ready("cycle 1, 0 faults, MQTT connected")
    notifier.reloading()
    notifier.stopping()
    assert notifier.watchdog(now=100.0)
    assert not notifier.watchdog(now=100.5)  # at most twice per period
    assert notifier.watchdog(now=101.0)
    messages = notify_socket.drain()
    assert messages[0] == "READY=1\nSTATUS=cycle 1, 0 faults, MQTT connected"
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", messages[1])
    assert messages[2:] == ["STOPPING=1", "WATCHDOG=1", "WATCHDOG=1"]


def test_notifier_is_silent_outside_systemd_and_for_another_pid() -> None:
    assert not Notifier({}).enabled
    other = Notifier(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_s is None
    Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"}).ready("x")  # logged once, never raised


async def test_watchdog_pings_stop_when_the_loop_is_stuck(
    broker: tuple[str, int], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"})
    service = Service(service_settings(*broker, tmp_path), notifier=notifier)
    runner = service.daemon.runner
    async with running(service):
        await wait_until(lambda: notify_socket.count("READY=1") == 1)
        # Healthy: cycles (0.1 s) complete, and each one may feed the watchdog.
        await wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 3)

        stuck, entered = asyncio.Event(), asyncio.Event()
        real_run_once = runner.run_once

        async def hang() -> CycleReport:
            entered.set()
            await stuck.wait()  # a cycle that never completes
            return await real_run_once()

        runner.run_once = hang  # type: ignore[method-assign]
        await asyncio.wait_for(entered.wait(), 10)  # the last good cycle has pinged by now
        before = notify_socket.count("WATCHDOG=1")
        await asyncio.sleep(0.8)
        assert notify_socket.count("WATCHDOG=1") == before  # no pings: systemd would restart us
        runner.run_once = real_run_once  # type: ignore[method-assign]
        stuck.set()
        await wait_until(lambda: notify_socket.count("WATCHDOG=1") > before)
    assert notify_socket.count("STOPPING=1") >= 1


def test_the_daemon_notifies_systemd_through_its_life(
    broker: tuple[str, int], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "1000000",
        "CARLIGHTD_MQTT__HOST": broker[0],
        "CARLIGHTD_MQTT__PORT": str(broker[1]),
        "CARLIGHTD_MQTT__BASE_TOPIC": f"test-{uuid.uuid4().hex[:8]}",
        "CARLIGHTD_DIAGNOSTICS__STATE_DIR": str(tmp_path / "state"),
        "CARLIGHTD_DIAGNOSTICS__CYCLE_S": "0.2",
        "CARLIGHTD_DIAGNOSTICS__READ_TIMEOUT_S": "0.05",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "carlightd", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            deadline = time.monotonic() + 10
            while notify_socket.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            fields = [f for m in notify_socket.drain() for f in m.split("\n")]
            assert fields[0] == "READY=1"
            assert fields[1].startswith("STATUS=cycle 1, 0 faults, MQTT ")
            proc.send_signal(signal.SIGHUP)
            while notify_socket.count("READY=1") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            fields = [f for m in notify_socket.drain() for f in m.split("\n")]
            assert "RELOADING=1" in fields
            assert fields.index("RELOADING=1") < len(fields) - fields[::-1].index("READY=1") - 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()
    assert notify_socket.count("STOPPING=1") >= 1


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@needs_systemd_analyze
def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    installed = Path(sys.executable).with_name("carlightd")
    unit = tmp_path / "carlightd.service"
    unit.write_text(UNIT.read_text().replace("/opt/carlightd/bin/carlightd", str(installed)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_systemd_analyze
def test_unit_file_security_exposure_is_2_or_better() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for carlightd.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_file_has_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=carlightd",
        "ConfigurationDirectory=carlightd",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text
