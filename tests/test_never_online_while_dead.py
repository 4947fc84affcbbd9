"""A daemon that stops for any reason but a clean stop says `offline` and exits 1; a second Ctrl-C
still stops cleanly; two daemons claiming one car are named in an error, not left to fight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from carlightd.app.daemon import Service
from carlightd.core.diagnoser import CycleReport
from tests.brokers import subscribed
from tests.conftest import running, service_settings, wait_until


async def _retained_availability(broker: tuple[str, int], root: str) -> bytes:
    async with subscribed(*broker, f"{root}/availability") as sub:
        await sub.wait_for(lambda: bool(sub.messages), what="the retained availability")
        return sub.messages[-1][1]


async def test_a_failing_cycle_leaves_offline_behind(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = Service(service_settings(*broker, tmp_path), heartbeat=False)
    root = service.publisher.topics.root
    diagnose = service.daemon.diagnoser.diagnose

    def breaks_after_a_while(*args: Any, **kwargs: Any) -> CycleReport:
        if service.daemon.diagnoser.cycle >= 5:
            raise RuntimeError("forced internal failure")
        return diagnose(*args, **kwargs)

    service.daemon.diagnoser.diagnose = breaks_after_a_while  # type: ignore[method-assign]
    task = asyncio.create_task(service.run())
    await wait_until(lambda: service.publisher.connected)
    assert await _retained_availability(broker, root) == b"online"
    with pytest.raises(ExceptionGroup) as failure:
        await asyncio.wait_for(task, timeout=15)
    assert failure.group_contains(RuntimeError, match="forced internal failure")
    assert await _retained_availability(broker, root) == b"offline"


async def test_a_failing_publisher_leaves_offline_behind(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = Service(service_settings(*broker, tmp_path), heartbeat=False)
    root = service.publisher.topics.root
    task = asyncio.create_task(service.run())
    await wait_until(lambda: service.publisher.connected and service.publisher.backlog == 0)

    async def broken_flush(client: Any) -> None:
        raise RuntimeError("forced failure in the publisher")

    service.publisher._flush = broken_flush  # type: ignore[method-assign]
    service.daemon.car.inject("tail_left", "open_circuit")  # something to send
    with pytest.raises(ExceptionGroup) as failure:
        await asyncio.wait_for(task, timeout=15)
    assert failure.group_contains(RuntimeError, match="forced failure in the publisher")
    assert await _retained_availability(broker, root) == b"offline"


def _daemon_env(broker: tuple[str, int], tmp_path: Path, base: str) -> dict[str, str]:
    return {
        **os.environ,
        "CARLIGHTD_MQTT__HOST": broker[0],
        "CARLIGHTD_MQTT__PORT": str(broker[1]),
        "CARLIGHTD_MQTT__BASE_TOPIC": base,
        "CARLIGHTD_DIAGNOSTICS__STATE_DIR": str(tmp_path / "state"),
        "CARLIGHTD_DIAGNOSTICS__CYCLE_S": "0.1",
        "CARLIGHTD_DIAGNOSTICS__READ_TIMEOUT_S": "0.05",
    }


# A real `carlightd run` process whose diagnosis breaks after five cycles.
CRASHING_DAEMON = """
import sys
from carlightd import cli
from carlightd.core.diagnoser import Diagnoser

original = Diagnoser.diagnose
def diagnose(self, *args, **kwargs):
    if self.cycle >= 5:
        raise RuntimeError("forced internal failure")
    return original(self, *args, **kwargs)
Diagnoser.diagnose = diagnose
sys.exit(cli.main(["run", "--log-format", "json"]))
"""


async def test_a_crashing_process_exits_1_and_says_offline(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    base = f"test-{uuid.uuid4().hex[:8]}"
    root = f"{base}/demo-car"
    async with subscribed(*broker, f"{root}/availability") as sub:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CRASHING_DAEMON,
            env=_daemon_env(broker, tmp_path, base),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
        await sub.wait_for(lambda: b"offline" in [m[1] for m in sub.messages], what="offline")
    assert process.returncode == 1
    assert [m[1] for m in sub.messages] == [b"online", b"offline"]
    assert b'"event": "crashed"' in stderr
    assert await _retained_availability(broker, root) == b"offline"


def test_sigint_twice_still_stops_cleanly(broker: tuple[str, int], tmp_path: Path) -> None:
    base = f"test-{uuid.uuid4().hex[:8]}"
    with subprocess.Popen(
        [sys.executable, "-m", "carlightd", "run", "--log-format", "json"],
        env=_daemon_env(broker, tmp_path, base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:  # wait until it is connected
                if b"mqtt_connected" in line:
                    break
            process.send_signal(signal.SIGINT)
            time.sleep(0.01)
            process.send_signal(signal.SIGINT)
            _, rest = process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 0, rest.decode()
    assert b"Traceback" not in rest
    assert asyncio.run(_retained_availability(broker, f"{base}/demo-car")) == b"offline"


async def test_two_daemons_for_one_car_are_named_not_left_to_fight(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    first = Service(service_settings(*broker, tmp_path / "a"), heartbeat=False)
    base = first.settings.mqtt.base_topic
    second = Service(
        service_settings(*broker, tmp_path / "b", mqtt__base_topic=base), heartbeat=False
    )
    with capture_logs() as logs:
        async with running(first), running(second):
            await wait_until(
                lambda: any(e["event"] == "mqtt_connection_taken_over" for e in logs),
                timeout_s=60,
            )
    errors = [e for e in logs if e["event"] == "mqtt_connection_taken_over"]
    instances = {first.publisher.instance, second.publisher.instance}
    assert any(e["other_instance"] in instances for e in errors), errors
    assert "give every car its own vehicle.id" in errors[0]["cause"]
    # They slowed down: far fewer connections than a fight at the first backoff step would make.
    assert first.publisher.connections + second.publisher.connections < 40
