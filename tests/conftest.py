from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from carlightd.app.daemon import Service
from carlightd.config import Settings
from tests.brokers import SHARED_BROKER, PrivateBroker, listening, unique_base_topic
from tests.simulate import settings as make_settings


def using_embedded_broker() -> bool:
    if os.environ.get("CARLIGHTD_TEST_BROKER") == "embedded":
        return True
    return not listening(*SHARED_BROKER) and not PrivateBroker.available()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that calls `logs.configure` (as the CLI does) leaves logging as it found it: the
    next test's `capture_logs` and pytest's own capture handlers keep working."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


SCAN_TOOL_SWITCHES = ("DOIP", "ELM327", "ELM327_PTY", "ISOTP")


@pytest.fixture(autouse=True)
def _scan_tool_off_unless_asked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every daemon a test starts, in this process or as a `carlightd` child, would otherwise
    listen on the scan tool's fixed ports (13400, 35000), and two at once would fight over them.
    Tests marked `scan_tool` choose their own (port 0: any free one)."""
    if request.node.get_closest_marker("scan_tool") is None:
        for switch in SCAN_TOOL_SWITCHES:
            monkeypatch.setenv(f"CARLIGHTD_SCAN_TOOL__{switch}", "false")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The machine's broker at 127.0.0.1:1883, else a private Mosquitto, else the embedded broker
    (CARLIGHTD_TEST_BROKER=embedded forces the last, to check that fallback)."""
    forced_embedded = os.environ.get("CARLIGHTD_TEST_BROKER") == "embedded"
    if listening(*SHARED_BROKER) and not forced_embedded:
        yield SHARED_BROKER
        return
    embedded = forced_embedded or not PrivateBroker.available()
    private = PrivateBroker(tmp_path, embedded=embedded).start()
    try:
        yield ("127.0.0.1", private.port)
    finally:
        private.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., PrivateBroker]]:
    started: list[PrivateBroker] = []

    def start(
        port: int | None = None,
        extra_config: str = "",
        *,
        persistence: bool = False,
        listener: str | None = None,
    ) -> PrivateBroker:
        if not PrivateBroker.available():
            pytest.skip("this test needs the mosquitto binary")
        broker = PrivateBroker(
            tmp_path, port, extra_config, persistence=persistence, listener=listener
        ).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def service_settings(host: str, port: int, state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mqtt__host": host,
        "mqtt__port": port,
        "mqtt__base_topic": unique_base_topic(),
        "diagnostics__state_dir": state_dir,
        "diagnostics__cycle_s": 0.1,
        "diagnostics__read_timeout_s": 0.05,
        "diagnostics__confirm_cycles": 2,
        "diagnostics__heal_cycles": 2,
        "diagnostics__telemetry_s": 0.5,
        "simulation__profile": "steady",
    }
    values.update(overrides)
    return make_settings(**values)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll what the daemon itself knows (no message to wait on) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stop.set()
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack(limit=4)
            task.cancel()
            raise AssertionError("the service did not stop within 5 s of stop")
        await task
