"""The whole receive path fuzzed end to end: hypothesis makes requests, a real broker carries them
to a real daemon, and every one that can be answered is answered while the daemon keeps cycling.

The daemon runs in a thread with its own event loop for the whole module; each example is
published with paho from the test's thread and waited for on the response topic.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from carlightd.app.daemon import Service
from carlightd.contract.commands import COMMANDS
from tests.brokers import SHARED_BROKER, listening
from tests.conftest import service_settings

pytestmark = pytest.mark.skipif(
    not listening(*SHARED_BROKER), reason="needs the broker at 127.0.0.1:1883"
)

RESPONSE_TIMEOUT_S = 10.0


class DaemonThread:
    """A real daemon in a thread of its own, and a paho client to talk to it."""

    def __init__(self, state_dir: Path) -> None:
        self.service = Service(service_settings(*SHARED_BROKER, state_dir), heartbeat=False)
        self.root = self.service.publisher.topics.root
        self.loop = asyncio.new_event_loop()
        self.outcome: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self.responses: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.responses.put((m.topic, bytes(m.payload)))

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.service.run())
        except BaseException as error:  # the test reports it
            self.outcome = error
        finally:
            self.loop.close()

    def start(self) -> None:
        self.thread.start()
        self.client.connect(*SHARED_BROKER)
        self.client.loop_start()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(f"{self.root}/response/#", qos=1)
        assert subscribed.wait(5), "no SUBACK"
        pause = threading.Event()
        for _ in range(500):
            if self.service.publisher.connected:
                break
            pause.wait(0.02)
        assert self.service.publisher.connected, "the daemon did not connect"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.service.stop.set)
        self.thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()

    def ask(self, command: str, payload: bytes) -> dict[str, Any]:
        while not self.responses.empty():
            self.responses.get_nowait()
        self.client.publish(f"{self.root}/request/{command}", payload, qos=1).wait_for_publish(5)
        topic, body = self.responses.get(timeout=RESPONSE_TIMEOUT_S)
        assert topic == f"{self.root}/response/{command}"
        parsed: dict[str, Any] = json.loads(body)
        return parsed


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    running = DaemonThread(tmp_path_factory.mktemp("fuzz-state"))
    running.start()
    yield running
    running.stop()
    assert running.outcome is None, f"the daemon stopped: {running.outcome!r}"


# JSON values with the texts that hurt: lone surrogates, control characters, deep nesting.
_texts = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(
    ["\ud800", "x\udfffy", "\x00", "\u202e", "<script>", "[bold]x[/]", "", " " * 10]
)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _texts
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=30,
)
_known_keys = st.sampled_from(["component", "failure", "state", "transaction", "colour"])
_bodies = st.dictionaries(_known_keys | _texts, _values, max_size=5)


def _encode(value: object) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes, as a hostile client would.
    return json.dumps(value, ensure_ascii=True).encode()


_deep = st.integers(min_value=1, max_value=2000).map(lambda n: b"[" * n + b"]" * n)
_payloads = (
    _bodies.map(_encode)
    | _values.map(_encode)
    | st.binary(max_size=300)
    | _deep
    | st.binary(min_size=4090, max_size=4200)
)
_commands = st.sampled_from([*COMMANDS, "unknown", "ÄÖÜ", "a" * 300, "x-y.z"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(command=_commands, payload=_payloads)
def test_every_request_is_answered_and_the_daemon_goes_on(
    daemon: DaemonThread, command: str, payload: bytes
) -> None:
    response = daemon.ask(command, payload)
    assert response["status"] in ("ok", "error")
    expected = {"status", "data" if response["status"] == "ok" else "error", "transaction"}
    assert set(response) == expected
    assert daemon.thread.is_alive(), f"the daemon stopped: {daemon.outcome!r}"
    assert daemon.service.publisher.requests.failed == 0


def test_the_daemon_kept_cycling_through_the_fuzzing(daemon: DaemonThread) -> None:
    cycles = daemon.service.daemon.diagnoser.cycle
    done = threading.Event()
    for _ in range(300):
        if daemon.service.daemon.diagnoser.cycle >= cycles + 3:
            break
        done.wait(0.02)
    assert daemon.service.daemon.diagnoser.cycle >= cycles + 3
    assert daemon.service.publisher.connected
    # A last ordinary request still works.
    response = daemon.ask("set_ignition", b'{"state": "run", "transaction": "last"}')
    assert response == {"status": "ok", "data": {"ignition": "run"}, "transaction": "last"}
