"""The one module that owns the broker connection.

`Publisher` is the cycle's sink: `deliver` never waits for the network. It records what each topic
should say (retained state coalesces: last value wins), queues events in order, and wakes the
sender. The connection loop connects, announces `online`, republishes every retained topic (so a
broker that lost everything converges to the truth), serves commands, and on any connection error
waits with exponential backoff and jitter before trying again. The diagnosis never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
import zlib
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import aiomqtt

from carlightd import logs
from carlightd.config import Settings
from carlightd.diagnostics.diagnoser import CycleReport
from carlightd.service import homeassistant, tcp
from carlightd.service.commands import CommandHandler
from carlightd.service.outbox import Outbox
from carlightd.service.payloads import (
    OFFLINE,
    ONLINE,
    ComponentPayload,
    EventPayload,
    FaultsPayload,
    TelemetryPayload,
    Topics,
    payload_bytes,
)

log = logs.get("carlightd.mqtt")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# Bounded queues inside the MQTT client: requests beyond this wait are dropped (aiomqtt logs it),
# and paho never holds more than this many unsent messages.
MAX_QUEUED_INCOMING = 100
MAX_QUEUED_OUTGOING = 1_000
STOP_FLUSH_S = 1.0
# Retained topics sent together before awaiting their acknowledgements: enough to fill a write,
# few enough that aiomqtt's and paho's per-message bookkeeping (which scans what is in flight)
# stays cheap, and under aiomqtt's "pending calls" warning (10).
RETAINED_IN_FLIGHT = 8


def backoff_delays(rng: random.Random) -> Any:
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


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.mqtt.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    context.check_hostname = tls.check_hostname
    return context


def client_id(root: str, vehicle: str) -> str:
    """Stable and unique per vehicle root: two daemons sharing a broker never kick each other off
    (a broker disconnects the older of two clients with one id), even for the same vehicle id
    under different base topics."""
    return f"carlightd-{vehicle}-{zlib.crc32(root.encode()):08x}"


def make_client(settings: Settings, identifier: str, will: aiomqtt.Will | None) -> aiomqtt.Client:
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
        max_queued_outgoing_messages=MAX_QUEUED_OUTGOING,
        socket_options=[tcp.NODELAY],  # small messages, sent as they happen
    )
    tcp.acknowledge_at_once(client)
    return client


class Publisher:
    def __init__(
        self,
        settings: Settings,
        handler: CommandHandler | None = None,
        *,
        clock: Any = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.vehicle = settings.vehicle.id
        self.topics = Topics(settings.mqtt.base_topic, self.vehicle)
        self.handler = handler
        # Events come from the durable outbox; `persist` saves it once the broker acknowledged some.
        self.outbox = Outbox()
        self.persist: Callable[[], None] = lambda: None
        self.clock = clock
        self.rng = rng or random.Random()
        self.telemetry_s = settings.diagnostics.telemetry_s
        self.connected = False
        self.connections = 0
        self.published = 0  # messages handed to the broker (acknowledged, for QoS 1)
        # What each retained topic should say, and which of them the broker has not heard yet.
        self._retained: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}
        self._telemetry: bytes | None = None
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._component_keys: dict[str, tuple[Any, ...]] = {}
        self._component_sent_at: dict[str, float] = {}
        self._faults_key: tuple[Any, ...] | None = None
        self._telemetry_at: float | None = None
        self._discovery_topics: list[str] = []
        self._announced: dict[str, str] = {}  # Home Assistant object id -> platform
        self.announce_to_home_assistant()

    def announce_to_home_assistant(self) -> None:
        """(Re)state the discovery messages; retained like the rest, so resent on reconnect."""
        current = {k: v["platform"] for k, v in homeassistant.components(self.settings).items()}
        retired = {k: v for k, v in self._announced.items() if k not in current}
        self._announced = {**retired, **current}
        messages = homeassistant.discovery_messages(self.settings, retired)
        for topic, payload in messages.items():
            self._set(topic, b"" if payload is None else json.dumps(payload).encode())
            if topic not in self._discovery_topics:
                self._discovery_topics.append(topic)
        self._wake.set()

    # --- the sink: called by the cycle, never blocks ---------------------------------------------

    async def deliver(self, report: CycleReport) -> None:
        now = self.clock()
        # Compared on the core's own values; a payload is only built when something changed.
        faults_key = (tuple(report.warning_lamps.items()), tuple(report.faults))
        if faults_key != self._faults_key:
            self._faults_key = faults_key
            self._set(self.topics.faults, FaultsPayload.of(self.vehicle, report).encode())
        for part_id, state in report.components.items():
            # What a subscriber cares about; the judged values in `reason` of a failing part move
            # with the noise and are refreshed with the readings.
            key = (
                state.status,
                state.failure,
                state.dtc,
                state.dtc_status,
                state.consequence_of,
                state.reason if state.status == "untested" else None,
            )
            sent_at = self._component_sent_at.get(part_id)
            stale = sent_at is None or now - sent_at >= self.telemetry_s
            if key != self._component_keys.get(part_id) or stale:
                self._component_keys[part_id] = key
                self._component_sent_at[part_id] = now
                payload = ComponentPayload.of(state, report.at).encode()
                self._set(self.topics.component(part_id), payload)
        if self._telemetry_at is None or now - self._telemetry_at >= self.telemetry_s:
            self._telemetry_at = now
            self._telemetry = TelemetryPayload.of(self.vehicle, report).encode()
        self._wake.set()

    def forget_parts(self, part_ids: Iterable[str]) -> None:
        """Parts the car no longer has (a reload changed its components): their retained topics
        are removed from the broker with an empty retained message."""
        for part_id in part_ids:
            self._component_keys.pop(part_id, None)
            self._component_sent_at.pop(part_id, None)
            self._set(self.topics.component(part_id), b"")

    def _set(self, topic: str, payload: bytes) -> None:
        self._retained[topic] = payload
        self._dirty[topic] = None

    @property
    def backlog(self) -> int:
        """Messages waiting for the broker."""
        return len(self.outbox) + len(self._dirty) + (self._telemetry is not None)

    # --- the connection ---------------------------------------------------------------------------

    def reconfigure(self, settings: Settings) -> None:
        """New broker settings from a reload: say goodbye on the old connection, open a new one."""
        same_root = Topics(settings.mqtt.base_topic, settings.vehicle.id).root == self.topics.root
        self.settings = settings
        self.telemetry_s = settings.diagnostics.telemetry_s
        if not same_root:
            self.topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
            # Everything is republished under the new root on the next cycle.
            self._retained.clear()
            self._dirty.clear()
            self._discovery_topics.clear()
            self._component_keys.clear()
            self._faults_key = None
        self.announce_to_home_assistant()
        self._reconnect.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`; then flush briefly, say `offline` and disconnect."""
        delays = backoff_delays(self.rng)
        while not stop.is_set():
            self._reconnect.clear()
            mqtt = self.settings.mqtt
            will = aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True)
            client = make_client(self.settings, client_id(self.topics.root, self.vehicle), will)
            try:
                async with client:
                    delays = backoff_delays(self.rng)
                    await self._session(client, stop)
                    continue
            except* aiomqtt.MqttError as group:
                error = group.exceptions[0]
                was_connected = self.connected
                self.connected = False
                delay = next(delays)
                log.warning(
                    "mqtt_connection_lost" if was_connected else "mqtt_connect_failed",
                    host=mqtt.host,
                    port=mqtt.port,
                    error=str(error),
                    retry_in_s=round(delay, 2),
                    backlog=self.backlog,
                )
            finally:
                self.connected = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await _first_of(stop, self._reconnect)

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        # Listen before saying `online`: whoever sees `online` may send a command at once.
        if self.handler is not None:
            await client.subscribe(self.topics.requests, qos=1)
        if self.settings.homeassistant.discovery:
            await client.subscribe(homeassistant.status_topic(self.settings), qos=1)
        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        # The broker may have lost everything (or be a new one): everything is news to it.
        for topic in self._retained:
            self._dirty[topic] = None
        self.connected = True
        self.connections += 1
        mqtt = self.settings.mqtt
        log.info("mqtt_connected", host=mqtt.host, port=mqtt.port, root=self.topics.root)
        self._wake.set()
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(self._send_forever(client), name="mqtt-send")
            receiver = group.create_task(self._receive_forever(client), name="mqtt-receive")
            await _first_of(stop, self._reconnect)
            await cancel_and_wait(receiver)
            await cancel_and_wait(sender)
        # A clean stop (or a move to other broker settings): what is queued goes out if it can,
        # briefly, then `offline`.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._flush(client)
        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True, timeout=1.0)
        log.info("mqtt_offline_published", backlog=self.backlog)

    async def _send_forever(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush(client)

    async def _flush(self, client: aiomqtt.Client) -> None:
        # Events first, in order, each leaving the outbox only once the broker acknowledged it.
        acknowledged = False
        try:
            while (event := self.outbox.first()) is not None:
                await client.publish(self.topics.events, EventPayload.of(event).encode(), qos=1)
                self.published += 1
                self.outbox.acknowledge(event.seq)
                acknowledged = True
        finally:
            if acknowledged:
                self.persist()
        while self._dirty:
            await self._publish_retained(client, list(islice(self._dirty, RETAINED_IN_FLIGHT)))
        if self._telemetry is not None:
            telemetry, self._telemetry = self._telemetry, None
            await client.publish(self.topics.telemetry, telemetry, qos=0)
            self.published += 1

    async def _publish_retained(self, client: aiomqtt.Client, topics: list[str]) -> None:
        """Publish these retained topics at once and wait for their acknowledgements together:
        one write and one read carry several messages, instead of a round trip each. A topic leaves
        `_dirty` only when the broker has it; one that changes meanwhile stays due."""
        sent = {topic: self._retained[topic] for topic in topics}
        for topic in topics:
            del self._dirty[topic]
        try:
            results = await asyncio.gather(
                *(client.publish(t, p, qos=1, retain=True) for t, p in sent.items()),
                return_exceptions=True,
            )
        except BaseException:  # cancelled (a stop, a reconnect): all of them are due again
            self._dirty.update(dict.fromkeys(sent))
            raise
        failure: BaseException | None = None
        for topic, result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                self._dirty[topic] = None
                if failure is None:
                    failure = result
            else:
                self.published += 1
        if failure is not None:
            raise failure

    async def _receive_forever(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if str(message.topic) == homeassistant.status_topic(self.settings):
                if payload_bytes(message.payload) == b"online":  # Home Assistant (re)started
                    for topic in self._discovery_topics:
                        self._dirty[topic] = None
                    self._wake.set()
                    log.info("home_assistant_online", discovery=len(self._discovery_topics))
                continue
            if self.handler is None:
                continue
            command = self.topics.command_of(str(message.topic))
            if command is None:
                continue
            response = await self.handler.handle(command, payload_bytes(message.payload))
            log.info(
                "command",
                command=command[:64],
                status=response.status,
                error=getattr(response, "error", None),
                transaction=response.transaction,
            )
            await client.publish(self.topics.response(command), response.encode(), qos=1)
