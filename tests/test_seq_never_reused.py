"""No event `seq` is ever reused, even when the state file is older than what was published (a save
that never reached a full disk) or gone: the retained ROOT/status carries the high-water mark,
and a daemon continues above it, renumbering events it made before it could ask the broker."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from carlightd.app.daemon import Service
from carlightd.store.state import STATE_FILE
from tests.brokers import PrivateBroker, subscribed
from tests.conftest import running, service_settings, wait_until


def _service(broker: tuple[str, int], state_dir: Path, base: str) -> Service:
    return Service(service_settings(*broker, state_dir, mqtt__base_topic=base), heartbeat=False)


async def _break(service: Service, part: str) -> None:
    """Break a part and wait until its confirmation has been acknowledged by the broker."""
    service.daemon.car.inject(part, "open_circuit")
    memory = service.daemon.diagnoser.memory
    await wait_until(lambda: memory.records.get((part, "open_circuit")) is not None)
    await wait_until(lambda: memory.records[(part, "open_circuit")].status == "confirmed")
    await wait_until(lambda: len(service.publisher.outbox) == 0 and service.publisher.connected)


def _seqs(messages: list[tuple[str, bytes, bool]], topic: str) -> list[int]:
    return [json.loads(payload)["seq"] for t, payload, _ in messages if t == topic]


async def test_a_deleted_state_file_does_not_restart_the_sequence(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    base = f"test-{uuid.uuid4().hex[:12]}"
    events = f"{base}/demo-car/events"
    async with subscribed(*broker, events) as sub:
        first = _service(broker, tmp_path, base)
        async with running(first):
            await _break(first, "tail_left")
        published = _seqs(sub.messages, events)
        assert published == [1, 2]
        (tmp_path / STATE_FILE).unlink()
        second = _service(broker, tmp_path, base)
        async with running(second):
            await _break(second, "brake_left")
        seqs = _seqs(sub.messages, events)
    assert seqs == [1, 2, 3, 4], seqs


async def test_events_made_before_the_broker_answered_are_renumbered_above_its_mark(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    broker = private_broker(persistence=True)
    address = ("127.0.0.1", broker.port)
    base = f"test-{uuid.uuid4().hex[:12]}"
    events = f"{base}/demo-car/events"
    state = tmp_path / "state"
    stale = tmp_path / "stale-copy.json"
    # A consumer as the README describes: QoS 1, a persistent session on a persistent broker.
    consumer: dict[str, Any] = {
        "identifier": f"consumer-{uuid.uuid4().hex[:8]}",
        "clean_session": False,
    }
    received: list[int] = []

    async def collect(expected: int) -> None:
        async with aiomqtt.Client(*address, **consumer) as client:
            await client.subscribe(events, qos=1)
            async with asyncio.timeout(15):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(json.loads(message.payload)["seq"])
                    if len(received) >= expected:
                        return

    collecting = asyncio.create_task(collect(4))
    first = _service(address, state, base)
    async with running(first):
        await _break(first, "tail_left")  # events 1, 2
        shutil.copy(state / STATE_FILE, stale)  # the last save that "reached the disk"
        await _break(first, "brake_left")  # events 3, 4: published, never saved
    await collecting
    assert received == [1, 2, 3, 4]
    shutil.copy(stale, state / STATE_FILE)
    broker.stop()
    # The daemon restarts from the stale file while the broker is down: its new events are
    # numbered from the stale seq (3, 4, …) and wait in the outbox.
    second = _service(address, state, base)
    async with running(second):
        second.daemon.car.inject("headlamp_left", "open_circuit")
        memory = second.daemon.diagnoser.memory
        await wait_until(lambda: len(second.publisher.outbox) >= 3)  # tail_left heals too
        made_offline = [event.seq for event in second.publisher.outbox.pending()]
        assert made_offline[0] == 3
        broker = private_broker(port=broker.port, persistence=True)
        await wait_until(lambda: second.publisher.connected and len(second.publisher.outbox) == 0)
        assert memory.seq >= 4 + len(made_offline)
    await collect(4 + len(made_offline))
    assert received[:4] == [1, 2, 3, 4]
    assert received[4:] == list(range(5, 5 + len(made_offline))), received
    assert len(set(received)) == len(received)
