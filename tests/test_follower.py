"""The consumers' one follower, on real brokers: it follows, stops when told or when the consumer
has seen enough, says when the connection comes and goes, and comes back after a broker restart
(with backoff) or fails at once when a viewer must be told there is no broker."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from carlightd.consumers.follower import follow
from tests.brokers import PrivateBroker, free_port
from tests.conftest import service_settings, wait_until


def _client_id() -> str:
    return f"test-follower-{uuid.uuid4().hex[:8]}"


async def _publish(host: str, port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    async with aiomqtt.Client(host, port, identifier=_client_id()) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def test_follows_retained_and_live_messages_until_the_consumer_has_enough(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path)
    root = f"{settings.mqtt.base_topic}/car"
    await _publish(*broker, f"{root}/retained", b"old", retain=True)
    seen: list[tuple[str, bytes]] = []
    connections: list[bool] = []

    def handle(message: aiomqtt.Message) -> bool:
        seen.append((str(message.topic), bytes(message.payload)))
        return len(seen) == 2

    async def live_once_connected() -> None:
        await wait_until(lambda: connections == [True])
        await _publish(*broker, f"{root}/live", b"new")

    publisher = asyncio.create_task(live_once_connected())
    async with asyncio.timeout(15):
        await follow(
            settings,
            [f"{root}/#"],
            handle,
            client_id=_client_id(),
            on_connection=connections.append,
        )
    await publisher
    assert seen == [(f"{root}/retained", b"old"), (f"{root}/live", b"new")]
    assert connections == [True, False]  # the connection is left, and said to be
    await _publish(*broker, f"{root}/retained", b"", retain=True)


async def test_stop_ends_a_follower_that_is_waiting_for_messages(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path)
    stop = asyncio.Event()
    connections: list[bool] = []
    task = asyncio.create_task(
        follow(
            settings,
            [f"{settings.mqtt.base_topic}/#"],
            lambda message: False,
            client_id=_client_id(),
            stop=stop,
            on_connection=connections.append,
        )
    )
    await wait_until(lambda: connections == [True])
    stop.set()
    async with asyncio.timeout(10):
        await task
    assert connections == [True, False]


async def test_an_error_in_the_consumer_ends_the_follower_and_is_raised(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path)
    root = f"{settings.mqtt.base_topic}/car"
    await _publish(*broker, f"{root}/x", b"boom", retain=True)

    def handle(message: aiomqtt.Message) -> bool:
        raise LookupError("the consumer failed")

    with pytest.raises(LookupError, match="the consumer failed"):
        async with asyncio.timeout(15):
            await follow(settings, [f"{root}/#"], handle, client_id=_client_id())
    await _publish(*broker, f"{root}/x", b"", retain=True)


async def test_no_broker_at_first_is_an_error_when_the_viewer_must_say_so(tmp_path: Path) -> None:
    settings = service_settings("127.0.0.1", free_port(), tmp_path)
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(15):
            await follow(
                settings, ["x/#"], lambda m: True, client_id=_client_id(), must_connect_first=True
            )


async def test_no_broker_is_tried_again_until_stopped(tmp_path: Path) -> None:
    settings = service_settings("127.0.0.1", free_port(), tmp_path)
    stop = asyncio.Event()
    attempts: list[float] = []
    rng = _CountingRandom(attempts)
    task = asyncio.create_task(
        follow(settings, ["x/#"], lambda m: True, client_id=_client_id(), stop=stop, rng=rng)
    )
    await wait_until(lambda: len(attempts) >= 3)  # three backoffs drawn: three failed attempts
    assert not task.done()
    stop.set()
    async with asyncio.timeout(10):
        await task


async def test_comes_back_after_the_broker_restarts(
    private_broker: Callable[..., PrivateBroker], tmp_path: Path
) -> None:
    broker = private_broker()
    settings = service_settings("127.0.0.1", broker.port, tmp_path)
    root = f"{settings.mqtt.base_topic}/car"
    stop = asyncio.Event()
    connections: list[bool] = []
    seen: list[bytes] = []

    def handle(message: aiomqtt.Message) -> bool:
        seen.append(bytes(message.payload))
        return False

    task = asyncio.create_task(
        follow(
            settings,
            [f"{root}/#"],
            handle,
            client_id=_client_id(),
            stop=stop,
            on_connection=connections.append,
        )
    )
    try:
        await wait_until(lambda: connections == [True])
        await _publish("127.0.0.1", broker.port, f"{root}/a", b"before")
        await wait_until(lambda: seen == [b"before"])
        broker.stop()
        await wait_until(lambda: connections == [True, False])
        broker.start()  # the same port
        await wait_until(lambda: connections == [True, False, True], timeout_s=30)
        await _publish("127.0.0.1", broker.port, f"{root}/a", b"after")
        await wait_until(lambda: seen == [b"before", b"after"])
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


class _CountingRandom(random.Random):
    """Counts the backoff delays the follower draws (one per failed attempt)."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(1)
        self.draws = draws

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append(value)
        return value
