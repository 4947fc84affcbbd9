"""Connection trouble is normal: the diagnosis never stops, and a broker that comes back (even one
that lost everything) converges to the truth. Each test runs its own private Mosquitto."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import aiomqtt
import pytest

from carlightd.app.daemon import Service
from carlightd.outputs.mqtt.publisher import Publisher, client_id
from carlightd.runtime.connection import BACKOFF_MAX_S, backoff_delays
from tests.brokers import PrivateBroker, free_port, subscribed
from tests.conftest import running, service_settings, wait_until


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    delays = list(islice(backoff_delays(random.Random(3)), 12))
    steps = [min(BACKOFF_MAX_S, 0.5 * 2**i) for i in range(12)]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    assert max(delays) <= BACKOFF_MAX_S


async def test_broker_restart_republishes_everything(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    broker = private_broker()
    service = Service(service_settings("127.0.0.1", broker.port, tmp_path))
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.publisher.connected and service.publisher.backlog == 0)
        broker.stop()  # a broker without persistence: everything retained is gone
        await wait_until(lambda: not service.publisher.connected)
        cycles = service.daemon.diagnoser.cycle
        service.daemon.car.inject("headlamp_left", "open_circuit")
        # The diagnosis goes on without a broker.
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 5)
        assert ("headlamp_left", "open_circuit") in service.daemon.diagnoser.memory.records
        broker = private_broker(port=broker.port)
        await wait_until(
            lambda: service.publisher.connections == 2 and service.publisher.backlog == 0
        )
        async with subscribed("127.0.0.1", broker.port, f"{root}/#") as sub:
            parts = {f"{root}/components/{c.id}" for c in service.settings.components}
            await sub.wait_for(
                lambda: parts <= {t for t, _, retained in sub.messages if retained},
                what="the retained state again",
            )
            assert sub.on(f"{root}/availability") == [b"online"]
            [faults] = sub.json_on(f"{root}/faults")[-1:]
            assert [f["component"] for f in faults["faults"]] == ["headlamp_left"]
            components = {t.rsplit("/", 1)[1] for t, _, _ in sub.messages if "/components/" in t}
            assert components == {c.id for c in service.settings.components}


async def test_broker_down_at_start(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    port = free_port()
    service = Service(service_settings("127.0.0.1", port, tmp_path))
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.daemon.diagnoser.cycle >= 5)
        assert not service.publisher.connected  # nothing listens there yet; cycles carry on
        broker = private_broker(port=port)
        async with subscribed("127.0.0.1", broker.port, f"{root}/availability") as sub:
            await sub.wait_for(lambda: sub.on(f"{root}/availability") == [b"online"], 15.0)
        await wait_until(lambda: service.publisher.connections == 1)  # once, after the backoff


def test_client_ids_are_stable_and_unique_per_vehicle_root() -> None:
    ours = client_id("carlightd/demo-car", "demo-car")
    assert ours == client_id("carlightd/demo-car", "demo-car")
    assert ours != client_id("test/demo-car", "demo-car")
    assert client_id("carlightd/car-1", "car-1").startswith("carlightd-car-1-")


class FlakyClient:
    """Stands in for the network in front of the publisher's bookkeeping: publishes to `refuse`
    fail, publishes to `hang` never complete."""

    def __init__(self, refuse: frozenset[str] = frozenset(), hang: frozenset[str] = frozenset()):
        self.refuse, self.hang = refuse, hang
        self.sent: list[str] = []

    async def publish(self, topic: str, payload: bytes, **_: object) -> None:
        if topic in self.hang:
            await asyncio.Event().wait()
        if topic in self.refuse:
            raise aiomqtt.MqttError("connection lost")
        self.sent.append(topic)


def publisher_with(tmp_path: Path, topics: list[str]) -> Publisher:
    publisher = Publisher(service_settings("127.0.0.1", 1, tmp_path))
    publisher._dirty.clear()  # discovery messages are not what this is about
    for topic in topics:
        publisher._set(topic, b"{}")
    return publisher


async def test_a_retained_topic_stays_due_until_the_broker_has_it(tmp_path: Path) -> None:
    publisher = publisher_with(tmp_path, ["t/a", "t/b", "t/c"])
    client = FlakyClient(refuse=frozenset({"t/b"}))
    with pytest.raises(aiomqtt.MqttError):
        await publisher._publish_retained(client, ["t/a", "t/b", "t/c"])  # type: ignore[arg-type]
    assert client.sent == ["t/a", "t/c"]
    assert list(publisher._dirty) == ["t/b"]  # sent again after the reconnect
    assert publisher.published == 2


async def test_an_interrupted_batch_is_due_again_whole(tmp_path: Path) -> None:
    publisher = publisher_with(tmp_path, ["t/a", "t/b"])
    batch = asyncio.create_task(
        publisher._publish_retained(FlakyClient(hang=frozenset({"t/b"})), ["t/a", "t/b"])  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.05)
    batch.cancel()  # a stop or a reconnect while waiting for acknowledgements
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert set(publisher._dirty) == {"t/a", "t/b"}
