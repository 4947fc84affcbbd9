"""The broker connection as the configuration describes it (host, credentials, TLS, keepalive),
shared by the daemon's publisher and every consumer: one place that makes an MQTT client, the
backoff between attempts, and a cancellation that really stops a task."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Iterator
from typing import Any

import aiomqtt

from carlightd.config import Settings
from carlightd.runtime import tcp

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# Bounded queues inside the MQTT client: requests beyond this wait are dropped (aiomqtt logs it),
# and paho never holds more than this many unsent messages.
MAX_QUEUED_INCOMING = 100
MAX_QUEUED_OUTGOING = 1_000


def backoff_delays(rng: random.Random) -> Iterator[float]:
    """Exponential backoff with "equal jitter": each wait is between half and all of the step."""
    step = BACKOFF_FIRST_S
    while True:
        yield step / 2 + rng.uniform(0, step / 2)
        step = min(BACKOFF_MAX_S, step * 2)


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel a task and wait until it has really stopped.

    In Python 3.11, asyncio.wait_for (which aiomqtt uses around every publish) can swallow a
    cancellation that arrives just as the awaited call completes (CPython gh-86296); the task then
    carries on. Cancelling again until it is done makes stopping reliable.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.05)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.mqtt.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    context.check_hostname = tls.check_hostname
    return context


def make_client(
    settings: Settings,
    identifier: str,
    will: aiomqtt.Will | None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    mqtt = settings.mqtt
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=settings.mqtt_password(),
        identifier=identifier,
        keepalive=mqtt.keepalive_s,
        will=will,
        timeout=CONNECT_TIMEOUT_S,
        tls_context=tls_context(settings),
        max_queued_incoming_messages=MAX_QUEUED_INCOMING,
        queue_type=queue_type,
        max_queued_outgoing_messages=MAX_QUEUED_OUTGOING,
        socket_options=[tcp.NODELAY],  # small messages, sent as they happen
    )
    tcp.acknowledge_at_once(client)
    return client
