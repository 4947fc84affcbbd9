"""Following a daemon's topics as a consumer: the one reconnecting MQTT loop behind `carlightd
watch`, `faults`, the live table and the dashboard.

`follow` connects, subscribes, hands every message to `handle` and, when the connection is lost,
connects again after a backoff with jitter (so many viewers do not come back in step). It returns
when `stop` is set or `handle` says it has seen enough, always leaving the MQTT connection by the
front door: only the message loop is cancelled, never the client's context, which would leave its
socket to the garbage collector. An error raised by `handle` ends the follower and is raised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import aiomqtt

from carlightd import logs
from carlightd.config import Settings
from carlightd.runtime.connection import backoff_delays, cancel_and_wait, make_client
from carlightd.runtime.waiting import wait_any

log = logs.get("carlightd.follower")


async def follow(
    settings: Settings,
    topics: Sequence[str],
    handle: Callable[[aiomqtt.Message], bool],
    *,
    client_id: str,
    stop: asyncio.Event | None = None,
    on_connection: Callable[[bool], None] = lambda connected: None,
    must_connect_first: bool = False,
    rng: random.Random | None = None,
) -> None:
    """Follow `topics` (QoS 1) until `stop` is set or `handle` returns True.

    `on_connection(True)` is called once subscribed, `on_connection(False)` when that connection
    has ended. With `must_connect_first`, a first connection that fails raises its
    `aiomqtt.MqttError` (a command-line viewer says "no broker" rather than wait in silence);
    after that, and always without it, a lost connection is tried again until stopped."""
    stop = stop or asyncio.Event()
    rng = rng or random.Random()
    delays = backoff_delays(rng)
    ever_connected = False
    while not stop.is_set():
        client = make_client(settings, client_id, will=None)
        delay = 0.0
        connected = False
        try:
            async with client:
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                connected = ever_connected = True
                delays = backoff_delays(rng)  # a connection made: the next loss starts afresh
                on_connection(True)
                if await _consume(client, handle, stop):
                    return
        except aiomqtt.MqttError as error:
            if must_connect_first and not ever_connected:
                raise
            delay = next(delays)
            log.warning(
                "follower_connection_lost" if connected else "follower_connect_failed",
                client_id=client_id,
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                error=str(error),
                retry_in_s=round(delay, 2),
            )
        finally:
            if connected:
                on_connection(False)
        await wait_any(stop, timeout_s=delay)


async def _consume(
    client: aiomqtt.Client, handle: Callable[[aiomqtt.Message], bool], stop: asyncio.Event
) -> bool:
    """Hand messages to `handle` until it returns True (True), or until `stop` (False)."""

    async def messages() -> bool:
        async for message in client.messages:
            if handle(message):
                return True
        return False  # the client's iterator ended: the connection is gone

    consumer = asyncio.ensure_future(messages())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([consumer, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(stopped)
        await cancel_and_wait(consumer)
    if consumer.cancelled():
        return False  # stopped
    return consumer.result()  # handle's verdict, or its error, or the client's MqttError
