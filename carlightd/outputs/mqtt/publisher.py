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
import os
import random
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import aiomqtt
from pydantic import ValidationError

from carlightd import logs
from carlightd.config import Settings
from carlightd.contract.payloads import (
    MAX_BROKER_SEQ,
    MAX_STATUS_BYTES,
    OFFLINE,
    ONLINE,
    ComponentPayload,
    DtcsPayload,
    EventPayload,
    FaultsPayload,
    StatusPayload,
    TelemetryPayload,
    Topics,
    payload_bytes,
)
from carlightd.core.diagnoser import CycleReport
from carlightd.outputs.mqtt import discovery_record, homeassistant, inbox
from carlightd.outputs.mqtt.commands import CommandHandler, printable
from carlightd.runtime.connection import (
    CONNECT_TIMEOUT_S,
    backoff_delays,
    cancel_and_wait,
    make_client,
)
from carlightd.runtime.waiting import wait_any
from carlightd.store.outbox import Outbox

log = logs.get("carlightd.mqtt")

STOP_FLUSH_S = 1.0
# Retained topics sent together before awaiting their acknowledgements: enough to fill a write,
# few enough that aiomqtt's and paho's per-message bookkeeping (which scans what is in flight)
# stays cheap, and under aiomqtt's "pending calls" warning (10).
RETAINED_IN_FLIGHT = 8
# Last words after a failure: how long to try to say `offline` before giving up.
LAST_WORDS_S = 2.0
# A connection lost this soon after it was made, several times in a row, is another client
# taking over our client id (a broker disconnects the older of two clients with one id).
SHORT_SESSION_S = 30.0
TAKEOVERS_BEFORE_ERROR = 3


def client_id(root: str, vehicle: str) -> str:
    """Stable and unique per vehicle root: two daemons sharing a broker never kick each other off
    (a broker disconnects the older of two clients with one id), even for the same vehicle id
    under different base topics."""
    return f"carlightd-{vehicle}-{zlib.crc32(root.encode()):08x}"


@dataclass(frozen=True)
class DaemonLink:
    """What the publisher reads of the daemon it reports for, and what it tells it."""

    outbox: Outbox  # events, durable, until the broker acknowledges them
    persist: Callable[[], None]  # save the state once the broker acknowledged some events
    event_seq: Callable[[], int]  # the highest event seq handed out so far
    problems: Callable[[], list[str]]  # what is wrong with the daemon itself (ROOT/status)
    # The highest seq the broker remembers, told once at the first connection (a restart from an
    # older state file continues above it).
    continue_above: Callable[[int], None]
    # Whether the fault memory is saved (one of the problems may say why not; others, such as a
    # scan-tool port in use, leave it saved).
    state_saved: Callable[[], bool] = lambda: True

    @classmethod
    def detached(cls) -> DaemonLink:
        """For a publisher on its own (tests, tools): an outbox of its own, nothing to save."""
        return cls(Outbox(), lambda: None, lambda: 0, list, lambda seq: None)


class Publisher:
    """The MQTT output (see `carlightd.outputs`): `deliver` records, `run` keeps the connection."""

    name = "mqtt"

    def __init__(
        self,
        settings: Settings,
        handler: CommandHandler | None = None,
        link: DaemonLink | None = None,
        *,
        clock: Any = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        link = link or DaemonLink.detached()
        self.settings = settings
        self.vehicle = settings.vehicle.id
        self.topics = Topics(settings.mqtt.base_topic, self.vehicle)
        self.handler = handler
        # Events come from the durable outbox; `persist` saves it once the broker acknowledged some.
        self.outbox = link.outbox
        self.persist = link.persist
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
        self._dtcs_key: tuple[Any, ...] | None = None
        self._dtcs: tuple[Any, ...] = ()
        self._dtcs_sent_at: float | None = None
        self._telemetry_at: float | None = None
        self._discovery_topics: list[str] = []
        # Home Assistant: the discovery the broker holds (remembered in the state directory), and
        # the ordered messages of a change to it that the broker has not all acknowledged yet.
        self._ha_last = discovery_record.load(settings.diagnostics.state_dir)
        self._ha_steps: list[tuple[str, bytes]] = []
        self._ha_sent = 0
        self._ha_next: discovery_record.Announced | None = None
        self._ha_again = False
        self._ha_retired: dict[str, str] = {}  # parts removed meanwhile: object id -> platform
        # Requests are hostile input: counted, throttled in the log, summarised per interval.
        self.requests = inbox.RequestStats()
        self._message_log = inbox.Throttle(self.requests)
        self._retained_requests_seen: set[str] = set()
        # ROOT/status: who we are, what is wrong with the daemon itself, the last event seq.
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started_at = datetime.now(UTC)
        self.problems = link.problems
        self.state_saved = link.state_saved
        self._status_key: tuple[Any, ...] | None = None
        # The highest event seq handed out so far (the fault memory's); ROOT/status carries it
        # and reaches the broker before any event numbered up to it.
        self.event_seq = link.event_seq
        self._status_seq = 0  # the seq in the latest status payload
        self._status_seq_sent = -1  # the seq in the latest status the broker acknowledged
        # Told the highest seq the broker remembers, once, at the first connection (so a
        # restart from an older state file continues above it).
        self.on_broker_seq = link.continue_above
        self._seq_synced = False
        self.offline_published = False
        self.takeovers = 0  # connections lost soon after they were made, in a row
        self._summary_base: dict[str, int] = {}
        self._foreign_instance: str | None = None
        self.announce_to_home_assistant()

    def announce_to_home_assistant(self) -> None:
        """(Re)state the discovery: the current mode's topics only, retained like the rest, so
        resent on every reconnect and whenever Home Assistant starts. What differs from the
        discovery announced last (another mode, discovery turned off or on, parts removed) goes
        first, once, in Home Assistant's order (`homeassistant.transition`); the new state is
        remembered when the broker has acknowledged all of it."""
        if 0 < self._ha_sent < len(self._ha_steps):
            # A change is half sent: it is finished first, and this one worked out after it.
            self._ha_again = True
            self._wake.set()
            return
        settings = self.settings
        wanted = discovery_record.Announced(
            mode=homeassistant.announced_mode(settings),
            prefix=settings.homeassistant.prefix,
            node=homeassistant.node_id(settings.vehicle.id),
            entities=homeassistant.platforms(settings),
        )
        last = self._ha_last
        if last is not None and (last.prefix, last.node) != (wanted.prefix, wanted.node):
            log.warning(
                "discovery_record_elsewhere",
                recorded=f"{last.prefix}/…/{last.node}",
                now=f"{wanted.prefix}/…/{wanted.node}",
                effect="what was announced there is left as it is",
            )
            last = None
        if last is not None and last.mode == wanted.mode:
            # Parts removed since (a reload, or while the daemon was stopped) stay named as
            # removed in this mode's discovery for as long as the daemon runs.
            earlier = {**last.entities, **self._ha_retired}
            self._ha_retired = {k: v for k, v in earlier.items() if k not in wanted.entities}
            changed = wanted.mode != "off" and last.entities != wanted.entities
        else:
            earlier = {} if last is None else last.entities
            self._ha_retired = {}
            changed = True
        messages = {}
        if wanted.mode != "off":
            messages = homeassistant.discovery_messages(settings, self._ha_retired)
        for topic in self._discovery_topics:  # another mode's: never restated
            if topic not in messages:
                self._retained.pop(topic, None)
                self._dirty.pop(topic, None)
        self._discovery_topics = list(messages)
        for topic, payload in messages.items():
            self._set(topic, b"" if payload is None else json.dumps(payload).encode())
        self._ha_steps, self._ha_sent, self._ha_next = [], 0, None
        if changed:
            steps = homeassistant.transition(settings, None if last is None else last.mode, earlier)
            self._ha_steps = [(t, b"" if p is None else json.dumps(p).encode()) for t, p in steps]
            self._ha_next = wanted
            log.info(
                "home_assistant_discovery_change",
                was="unknown" if last is None else last.mode,
                now=wanted.mode,
                messages=len(steps),
            )
        self._wake.set()

    async def _send_home_assistant_change(self, client: aiomqtt.Client) -> None:
        """A change of discovery, in its order, before any retained topic; then remembered."""
        while True:
            while self._ha_sent < len(self._ha_steps):
                topic, payload = self._ha_steps[self._ha_sent]
                await client.publish(topic, payload, qos=1, retain=True)
                self.published += 1
                self._ha_sent += 1
                if self._retained.get(topic) == payload:
                    self._dirty.pop(topic, None)  # just said
            if self._ha_next is None:
                return
            record, self._ha_next = self._ha_next, None
            self._ha_steps, self._ha_sent = [], 0
            self._ha_last = record
            discovery_record.save(self.settings.diagnostics.state_dir, record)
            log.info("home_assistant_discovery_changed", mode=record.mode)
            if not self._ha_again:
                return
            self._ha_again = False
            self.announce_to_home_assistant()

    # --- the sink: called by the cycle, never blocks ---------------------------------------------

    async def deliver(self, report: CycleReport) -> None:
        now = self.clock()
        # Compared on the core's own values; a payload is only built when something changed.
        faults_key = (tuple(report.warning_lamps.items()), tuple(report.faults))
        if faults_key != self._faults_key:
            self._faults_key = faults_key
            self._set(self.topics.faults, FaultsPayload.of(self.vehicle, report).encode())
        # The fault memory: said when it changes (a new record, a confirmation, a heal, an aging
        # step, a clear). `last_failed` alone moves on every cycle a fault is present: that is
        # refreshed at most every `telemetry_s`, as a component's reading is.
        dtcs = tuple(report.dtcs)
        dtcs_key = tuple(
            (d.component, d.failure, d.dtc_status, d.occurrences, d.aging_counter, d.freeze_frame)
            for d in dtcs
        )
        dtcs_stale = self._dtcs_sent_at is None or now - self._dtcs_sent_at >= self.telemetry_s
        if dtcs_key != self._dtcs_key or (dtcs != self._dtcs and dtcs_stale):
            self._dtcs_key, self._dtcs, self._dtcs_sent_at = dtcs_key, dtcs, now
            self._set(self.topics.dtcs, DtcsPayload.of(self.vehicle, report).encode())
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
        self._update_status()
        self._wake.set()

    def _update_status(self) -> None:
        """Restate `ROOT/status` when what it says changed (problems, or the last event seq)."""
        problems = self.problems()
        seq = self.event_seq()
        saved = self.state_saved()
        key = (tuple(problems), seq, saved)
        if key == self._status_key:
            return
        payload = StatusPayload(
            vehicle=self.vehicle,
            updated_at=datetime.now(UTC),
            instance=self.instance,
            started_at=self.started_at,
            state_saved=saved,
            problems=[printable(problem) for problem in problems],
            last_event_seq=seq,
        )
        self._set(self.topics.status, payload.encode())
        self._status_key = key
        self._status_seq = seq

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
            self._dtcs_key = self._dtcs_sent_at = None
        self.announce_to_home_assistant()
        self._reconnect.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`; then flush briefly, say `offline` and disconnect.

        Connection trouble is retried for ever. Anything else escapes (a bug): the session says
        `offline` on its way out, as a clean disconnect would otherwise discard the will.
        """
        delays = backoff_delays(self.rng)
        while not stop.is_set():
            self._reconnect.clear()
            mqtt = self.settings.mqtt
            will = aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True)
            client = make_client(
                self.settings,
                client_id(self.topics.root, self.vehicle),
                will,
                inbox.counting_queue(self.requests),
            )
            connected_at: float | None = None
            try:
                async with client:
                    connected_at = self.clock()
                    await self._session(client, stop)
                    delays = backoff_delays(self.rng)
                    continue
            except* aiomqtt.MqttError as group:
                error = group.exceptions[0]
                was_connected = self.connected
                self.connected = False
                short = connected_at is not None and self.clock() - connected_at < SHORT_SESSION_S
                if connected_at is not None and not short:
                    delays = backoff_delays(self.rng)  # a session that lasted: start afresh
                # Short sessions keep the backoff growing: two clients fighting over one id
                # slow down instead of kicking each other off several times a second.
                self.takeovers = self.takeovers + 1 if short else 0
                delay = next(delays)
                log.warning(
                    "mqtt_connection_lost" if was_connected else "mqtt_connect_failed",
                    host=mqtt.host,
                    port=mqtt.port,
                    error=str(error),
                    retry_in_s=round(delay, 2),
                    backlog=self.backlog,
                )
                if self.takeovers >= TAKEOVERS_BEFORE_ERROR:
                    self._report_takeover(client_id(self.topics.root, self.vehicle))
            finally:
                self.connected = False
            await wait_any(stop, self._reconnect, timeout_s=delay)

    def _report_takeover(self, identifier: str) -> None:
        other = self._foreign_instance or "unknown (it published no status)"
        log.error(
            "mqtt_connection_taken_over",
            times=self.takeovers,
            client_id=identifier,
            other_instance=other,
            cause=(
                f"the broker keeps closing this connection soon after it opens: another client "
                f"uses client id {identifier!r} — most likely a second carlightd with vehicle.id "
                f"{self.vehicle!r} and base_topic {self.settings.mqtt.base_topic!r} (instance "
                f"{other}); give every car its own vehicle.id"
            ),
        )

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        self.offline_published = False
        # Listen before saying `online`: whoever sees `online` may send a command at once.
        subscriptions = [(self.topics.status, 1)]
        if self.handler is not None:
            subscriptions.append((self.topics.requests, 1))
        if self.settings.homeassistant.discovery:
            subscriptions.append((homeassistant.status_topic(self.settings), 1))
        await client.subscribe(subscriptions)
        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        # The broker sent the retained messages of our subscriptions before it acknowledged
        # `online` (it handles one client's packets in order): the last status is here now.
        await self._take_queued(client)
        if not self._seq_synced:
            self._seq_synced = True
            self.on_broker_seq(0)  # nothing remembered: the state file's seq stands
        self._update_status()
        # The broker may have lost everything (or be a new one): everything is news to it.
        for topic in self._retained:
            self._dirty[topic] = None
        self.connected = True
        self.connections += 1
        mqtt = self.settings.mqtt
        log.info("mqtt_connected", host=mqtt.host, port=mqtt.port, root=self.topics.root)
        self._wake.set()
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send_forever(client), name="mqtt-send")
                receiver = group.create_task(self._receive_forever(client), name="mqtt-receive")
                summary = group.create_task(self._summarise_forever(), name="mqtt-summary")
                await wait_any(stop, self._reconnect, timeout_s=None)
                for task in (receiver, sender, summary):
                    await cancel_and_wait(task)
        except BaseException:
            # Not a clean stop (a lost connection, a bug, a cancelled daemon). aiomqtt closes
            # the connection cleanly on the way out, and a clean close discards the will:
            # `offline` must be said here, or `online` stays behind a dead daemon.
            await self._last_words(client)
            raise
        # A clean stop (or a move to other broker settings): what is queued goes out if it can,
        # briefly, then `offline`.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._flush(client)
        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True, timeout=1.0)
        self.offline_published = True
        self._log_summary(final=True)
        log.info("mqtt_offline_published", backlog=self.backlog)

    async def _last_words(self, client: aiomqtt.Client) -> None:
        """Try, briefly, to publish `offline` on a connection that is about to close."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(LAST_WORDS_S):
                await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
                self.offline_published = True
                log.info("mqtt_offline_published", after="failure")

    async def say_offline(self) -> bool:
        """After a failure that left no chance to say it on the session: a short connection of
        its own publishes `offline`. True when the broker has it."""
        if self.offline_published:
            return True
        client = make_client(self.settings, client_id(self.topics.root, self.vehicle), None)
        try:
            async with asyncio.timeout(LAST_WORDS_S + CONNECT_TIMEOUT_S):
                async with client:
                    await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError, OSError) as error:
            log.error("mqtt_offline_not_published", error=str(error))
            return False
        self.offline_published = True
        log.info("mqtt_offline_published", after="failure", connection="new")
        return True

    async def _send_forever(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush(client)

    async def _flush(self, client: aiomqtt.Client) -> None:
        # The sequence's high-water mark reaches the broker before any event numbered up to it:
        # a restart that lost its state file learns from it where to continue (never reusing).
        last = self.outbox.last()
        if last is not None and last.seq > self._status_seq_sent:
            self._update_status()
            await self._publish_retained(client, [self.topics.status])
        # Events next, in order, each leaving the outbox only once the broker acknowledged it.
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
        await self._send_home_assistant_change(client)  # before the discovery it changes
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
        sent = {topic: self._retained[topic] for topic in topics if topic in self._retained}
        status_seq = self._status_seq
        for topic in topics:
            self._dirty.pop(topic, None)
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
                if topic == self.topics.status:
                    self._status_seq_sent = max(self._status_seq_sent, status_seq)
        if failure is not None:
            raise failure

    # --- what arrives: hostile input ----------------------------------------------------------

    async def _take_queued(self, client: aiomqtt.Client) -> None:
        """Handle the messages already queued (the retained ones of a new subscription)."""
        messages = client.messages
        for _ in range(len(messages)):
            await self._on_message_guarded(client, await anext(messages))

    async def _receive_forever(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self._on_message_guarded(client, message)

    async def _on_message_guarded(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """One bad message is logged, never fatal (only a lost connection ends the session)."""
        try:
            await self._on_message(client, message)
        except aiomqtt.MqttError:
            raise
        except Exception:
            self.requests.failed += 1
            if self._message_log.allow():
                log.exception("message_handling_failed", topic=printable(str(message.topic)[:200]))

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        if topic == self.topics.status:
            self._on_status(payload_bytes(message.payload), retained=bool(message.retain))
            return
        if topic == homeassistant.status_topic(self.settings):
            if payload_bytes(message.payload) == b"online":  # Home Assistant (re)started
                for discovery_topic in self._discovery_topics:
                    self._dirty[discovery_topic] = None
                self._wake.set()
                if self._message_log.allow():
                    log.info("home_assistant_online", discovery=len(self._discovery_topics))
            return
        command = self.topics.command_of(topic)
        if self.handler is None or command is None:
            return
        if message.retain:
            # A retained request would be carried out again at every (re)connection.
            self.requests.retained_ignored += 1
            if topic not in self._retained_requests_seen:
                self._retained_requests_seen.add(topic)
                log.warning(
                    "retained_request_ignored",
                    topic=printable(topic[:200]),
                    fix=f"clear it with: mosquitto_pub -r -n -t '{printable(topic[:200])}'",
                )
            return
        self.requests.received += 1
        response = await self.handler.handle(command, payload_bytes(message.payload))
        error = getattr(response, "error", None)
        response_topic = self.topics.response(command)
        problem = inbox.topic_problem(response_topic)
        if problem is not None:
            self.requests.unanswerable += 1
            if self._message_log.allow():
                log.warning(
                    "request_unanswerable",
                    command=printable(command[:64]),
                    command_chars=len(command),
                    problem=f"no response: {problem}",
                    error=error,
                )
            return
        try:
            body = response.encode()
        except ValueError:  # cannot happen for what the handler returns; never fatal if it does
            body = (
                b'{"status":"error","error":"the response could not be encoded","transaction":null}'
            )
        if self._message_log.allow():
            log.info(
                "command",
                command=printable(command[:64]),
                status=response.status,
                error=error,
                transaction=response.transaction,
            )
        await client.publish(response_topic, body, qos=1)
        self.requests.answered += 1
        self.requests.errors += response.status == "error"

    def _on_status(self, payload: bytes, *, retained: bool) -> None:
        """ROOT/status: ours, echoed; the last one of an earlier run (the seq to continue
        above); or another daemon's, claiming the same car."""
        if not payload:
            return
        problem: str | None = None
        status: StatusPayload | None = None
        if len(payload) > MAX_STATUS_BYTES:
            problem = f"{len(payload)} bytes; ours are at most {MAX_STATUS_BYTES}"
        else:
            try:
                status = StatusPayload.model_validate_json(payload)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"])[:100] or "(top level)"
                problem = f"{where}: {first['msg']} ({error.error_count()} problems)"
        if status is not None and status.vehicle != self.vehicle:
            problem = f"it is vehicle {status.vehicle[:64]!r}'s"
        elif status is not None and status.instance == self.instance:
            return  # our own, echoed: nothing to learn (its seq may be past the belief bound)
        if status is not None and status.last_event_seq > MAX_BROKER_SEQ:
            problem = f"last_event_seq {status.last_event_seq} is beyond belief"
        if problem is not None or status is None:
            if self._message_log.allow():
                log.warning("status_not_ours", problem=printable(problem or "unreadable"))
            if retained and not self._seq_synced:  # nothing to learn from it; not a crash
                self._seq_synced = True
                self.on_broker_seq(0)
            return
        # Another daemon's (or an earlier run's) status.
        if not retained:  # live: another daemon has just connected under our client id
            self._foreign_instance = status.instance
            if not self._message_log.allow():
                return
            log.error(
                "second_daemon_for_vehicle",
                vehicle=self.vehicle,
                other_instance=printable(status.instance[:200]),
                this_instance=self.instance,
            )
        elif status.updated_at > self.started_at:
            self._foreign_instance = status.instance  # running since we started
        if retained and not self._seq_synced:
            self._seq_synced = True
            self.on_broker_seq(status.last_event_seq)

    # --- one summary line per interval ----------------------------------------------------------

    async def _summarise_forever(self) -> None:
        while True:
            await asyncio.sleep(inbox.SUMMARY_INTERVAL_S)
            self._log_summary()

    def _log_summary(self, *, final: bool = False) -> None:
        """Drops, suppressed log lines and what was answered since the last summary."""
        delta = inbox.changes(self.requests, self._summary_base)
        self._summary_base = self.requests.as_dict()
        self._message_log.new_interval()
        trouble = bool(delta.get("dropped") or delta.get("log_lines_suppressed"))
        if trouble or (final and delta):
            (log.warning if trouble else log.info)(
                "requests_summary", **delta, totals=self._summary_base
            )
