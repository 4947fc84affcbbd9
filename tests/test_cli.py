"""The installed command: `carlightd run` as a real process against a real broker: stopped by a
signal it says `offline` and exits 0 within 2 s; killed outright, the broker's will says it."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carlightd import config
from tests.brokers import subscribed, unique_base_topic


def start(
    tmp_path: Path, broker: tuple[str, int], base_topic: str, *args: str, **env: str
) -> subprocess.Popen[str]:
    """`carlightd run` as a process, against the test's broker, JSON logs on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "carlightd", "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "CARLIGHTD_MQTT__HOST": broker[0],
            "CARLIGHTD_MQTT__PORT": str(broker[1]),
            "CARLIGHTD_MQTT__BASE_TOPIC": base_topic,
            "CARLIGHTD_DIAGNOSTICS__STATE_DIR": str(tmp_path / "state"),
            "CARLIGHTD_DIAGNOSTICS__CYCLE_S": "0.1",
            "CARLIGHTD_DIAGNOSTICS__READ_TIMEOUT_S": "0.05",
            **env,
        },
    )


def wait_for_line(
    proc: subprocess.Popen[str], event: str, timeout_s: float = 10.0
) -> dict[str, object]:
    """The first JSON log line whose event is `event`; never blocks beyond the timeout."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=remaining):
                break
            line = proc.stderr.readline()
            if not line:
                break
            record: dict[str, object] = json.loads(line)
            if record["event"] == event:
                return record
    raise AssertionError(f"no {event!r} line within {timeout_s} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_publishes_offline_and_exits_0_within_2s(
    tmp_path: Path, broker: tuple[str, int], signum: int
) -> None:
    base_topic = unique_base_topic()
    availability = f"{base_topic}/demo-car/availability"
    async with subscribed(*broker, availability) as sub:
        with start(tmp_path, broker, base_topic) as proc:
            try:
                started = wait_for_line(proc, "started")
                assert started["vehicle"] == "demo-car"
                # The packaged default car: every configured part.
                assert started["components"] == len(
                    config.load(config.packaged_default()).components
                )
                connected = wait_for_line(proc, "mqtt_connected")
                assert connected["root"] == f"{base_topic}/demo-car"
                await sub.wait_for(lambda: sub.on(availability) == [b"online"], what="online")
                stopping = time.monotonic()
                proc.send_signal(signum)
                assert await asyncio.to_thread(proc.wait, 5) == 0
                assert time.monotonic() - stopping < 2.0
            finally:
                proc.kill()
        await sub.wait_for(lambda: sub.on(availability)[-1:] == [b"offline"], what="offline")
    assert (tmp_path / "state" / "fault-memory.json").exists()


async def test_will_says_offline_after_kill_9(tmp_path: Path, broker: tuple[str, int]) -> None:
    base_topic = unique_base_topic()
    availability = f"{base_topic}/demo-car/availability"
    async with subscribed(*broker, availability) as sub:
        with start(tmp_path, broker, base_topic) as proc:
            try:
                wait_for_line(proc, "mqtt_connected")
                await sub.wait_for(lambda: sub.on(availability) == [b"online"], what="online")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=5)
            finally:
                proc.kill()
        # No goodbye was said: the broker publishes the will.
        await sub.wait_for(lambda: sub.on(availability)[-1:] == [b"offline"], what="the will")
    retained = [r for t, _, r in sub.messages if t == availability]
    assert retained == [False, False]  # both arrived live; the broker also keeps the last


def test_run_with_bad_config_exits_2_before_starting(tmp_path: Path) -> None:
    with start(tmp_path, ("127.0.0.1", 1), "never", CARLIGHTD_MQTT__PORT="99999") as proc:
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "mqtt.port" in err
    assert "started" not in err


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [Path(sys.executable).with_name("carlightd"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("carlightd ")
