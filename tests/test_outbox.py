"""No lost transitions: every event is saved before it is published, leaves the outbox only once the
broker acknowledged it, and survives broker outages and daemon restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from carlightd.app.daemon import Service
from carlightd.core.domain import Kind
from carlightd.core.memory import FaultEvent, FaultMemory
from carlightd.store.outbox import Outbox
from carlightd.store.state import StateStore
from tests.brokers import PrivateBroker
from tests.conftest import running, service_settings, wait_until

T = datetime(2026, 5, 1, tzinfo=UTC)


def event(seq: int) -> FaultEvent:
    return FaultEvent(seq, "fault_pending", "tail_left", Kind.LAMP, "open_circuit", "B1200", T)


def test_outbox_is_bounded_and_says_what_it_dropped() -> None:
    outbox = Outbox(limit=3)
    outbox.extend(event(seq) for seq in range(1, 6))
    assert [e.seq for e in outbox.pending()] == [3, 4, 5]
    assert outbox.dropped == 2
    outbox.acknowledge(4)  # not the oldest: nothing happens
    assert len(outbox) == 3
    outbox.acknowledge(3)
    assert [e.seq for e in outbox.pending()] == [4, 5]


def test_outbox_survives_a_restart_with_the_memory(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "demo-car")
    memory = FaultMemory(1, 1, seq=5)
    store.save(memory, [event(4), event(5)])
    again = FaultMemory(1, 1)
    assert [e.seq for e in store.load(again)] == [4, 5]
    assert again.seq == 5
    stored = json.loads(store.path.read_text())
    assert [e["seq"] for e in stored["outbox"]] == [4, 5]


async def persistent_subscriber(port: int, client_id: str, topic: str) -> None:
    """Open a persistent session with a QoS 1 subscription, then go away."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(topic, qos=1)


async def collect(port: int, client_id: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """Come back to the persistent session and take everything it holds (and what follows)."""
    received: list[dict[str, Any]] = []
    client = aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False)
    with contextlib.suppress(TimeoutError):  # what arrived is judged by the caller
        async with client, asyncio.timeout(20):
            await client.subscribe(topic, qos=1)
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                received.append(json.loads(payload))
                if len({e["seq"] for e in received}) >= expected:
                    break
    return received


async def break_and_mend(service: Service, parts: list[str], cycles: int = 10) -> None:
    """Each part fails then heals: pending, confirmed, cleared — three events a part."""
    car = service.daemon.car
    diagnoser = service.daemon.diagnoser

    async def let_cycles_pass() -> None:
        until = diagnoser.cycle + cycles
        await wait_until(lambda: diagnoser.cycle >= until)

    for part in parts:
        car.inject(part, "open_circuit")
        await let_cycles_pass()
        car.repair(part)
        await let_cycles_pass()


async def test_events_produced_during_an_outage_all_arrive(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    broker = private_broker(persistence=True)
    settings = service_settings("127.0.0.1", broker.port, tmp_path / "state")
    events_topic = f"{settings.mqtt.base_topic}/{settings.vehicle.id}/events"
    await persistent_subscriber(broker.port, "outage-consumer", events_topic)
    service = Service(settings)
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        broker.stop()
        await wait_until(lambda: not service.publisher.connected)
        outage_started = time.monotonic()
        await break_and_mend(service, ["brake_left", "reverse", "tail_right"])
        produced = service.daemon.diagnoser.memory.seq
        assert produced == 9
        assert len(service.publisher.outbox) == 9  # all held, none lost
        broker = private_broker(port=broker.port, persistence=True)
        outage_s = time.monotonic() - outage_started
        assert outage_s > 5.0
        await wait_until(lambda: len(service.publisher.outbox) == 0)
    received = await collect(broker.port, "outage-consumer", events_topic, produced)
    seqs = sorted({e["seq"] for e in received})
    assert seqs == list(range(1, produced + 1))
    print(f"outage {outage_s:.1f} s: produced {produced} events, received {len(seqs)} distinct")


async def test_events_survive_a_daemon_restart_in_the_middle_of_an_outage(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    broker = private_broker(persistence=True)
    settings = service_settings("127.0.0.1", broker.port, tmp_path / "state")
    events_topic = f"{settings.mqtt.base_topic}/{settings.vehicle.id}/events"
    await persistent_subscriber(broker.port, "restart-consumer", events_topic)
    first = Service(settings)
    async with running(first):
        await wait_until(lambda: first.publisher.connected)
        broker.stop()
        await wait_until(lambda: not first.publisher.connected)
        await break_and_mend(first, ["brake_right", "license_plate"])
    # The daemon stopped during the outage with six events undelivered; a new one takes over.
    second = Service(settings)
    assert len(second.publisher.outbox) == 6
    async with running(second):
        await break_and_mend(second, ["headlamp_left"])
        produced = second.daemon.diagnoser.memory.seq
        assert produced == 9
        broker = private_broker(port=broker.port, persistence=True)
        await wait_until(lambda: len(second.publisher.outbox) == 0)
    received = await collect(broker.port, "restart-consumer", events_topic, produced)
    seqs = [e["seq"] for e in received]
    assert sorted(set(seqs)) == list(range(1, produced + 1))
    assert seqs == sorted(seqs)  # in order
    print(f"outage with restart: produced {produced} events, received {len(set(seqs))} distinct")
