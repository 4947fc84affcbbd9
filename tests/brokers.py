"""Real brokers for integration tests: the machine's Mosquitto, or a private one on a free port.

A test that must stop or restart a broker starts its own (`PrivateBroker`) and stops it by PID.
Where no `mosquitto` binary exists (a fresh laptop), the embedded amqtt broker stands in, so the
README's test command still passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

SHARED_BROKER = ("127.0.0.1", 1883)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def unique_base_topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class PrivateBroker:
    """A Mosquitto of our own on a free port, stopped (or killed) by PID; or, where there is no
    Mosquitto, carlightd's embedded amqtt broker in a process of its own."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_config: str = "",
        *,
        embedded: bool = False,
        persistence: bool = False,
        listener: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_config = extra_config
        self.embedded = embedded
        self.persistence = persistence
        # A whole listener block (TLS, passwords) instead of the plain anonymous one.
        self.listener = listener
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()

    def command(self) -> list[str]:
        if self.embedded:
            module = "carlightd.tools.embedded_broker"
            return [sys.executable, "-m", module, "--port", str(self.port)]
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        if self.persistence:  # sessions and queued messages survive a restart of the broker
            store = self.workdir / f"mosquitto-{self.port}-data"
            store.mkdir(exist_ok=True)
            persistence = f"persistence true\npersistence_location {store}/\n"
        else:
            persistence = "persistence false\n"
        listener = self.listener or "allow_anonymous true\n"
        # As root, mosquitto drops to its own user, who could not read or write our test files.
        run_as = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{listener}{persistence}{run_as}{self.extra_config}"
        )
        return [binary, "-c", str(conf)]

    def start(self) -> PrivateBroker:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not listening("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private broker on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class Subscriber:
    """Collects every message under a topic filter, with helpers to wait for one."""

    client: aiomqtt.Client
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(p) for p in self.on(topic)]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "a message"
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)}")
            self._arrived.clear()
            # Wake on a message, or poll: some predicates watch the daemon, not the broker.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._arrived.wait()

    async def _pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            self.messages.append((str(message.topic), data, bool(message.retain)))
            self._arrived.set()


@contextlib.asynccontextmanager
async def subscribed(host: str, port: int, topic_filter: str) -> AsyncIterator[Subscriber]:
    async with aiomqtt.Client(host, port, identifier=f"test-sub-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic_filter, qos=1)
        subscriber = Subscriber(client)
        pump = asyncio.create_task(subscriber._pump())
        try:
            yield subscriber
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump
