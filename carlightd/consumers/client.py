"""Talking to a running daemon over MQTT, like any other consumer: the CLI's client commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import aiomqtt
from rich.console import Console
from rich.live import Live
from rich.text import Text

from carlightd.config import Settings
from carlightd.consumers.follower import follow
from carlightd.consumers.received import Malformed, Received, parse, relative
from carlightd.consumers.terminal import SHOWN_DTCS, WatchState, clean, dtc_line, render, warning
from carlightd.contract.commands import COMMANDS
from carlightd.contract.payloads import (
    DtcsPayload,
    ErrorResponse,
    EventPayload,
    FaultsPayload,
    OkResponse,
    Topics,
    payload_bytes,
)
from carlightd.errors import CarlightdError
from carlightd.runtime.connection import make_client

RESPONSE_TIMEOUT_S = 5.0
RETAINED_WAIT_S = 2.0
# What the live table follows, below the vehicle's root.
WATCH_LIVE_TOPICS = ("availability", "faults", "dtcs", "components/+", "events")


class ClientError(CarlightdError):
    """Something a user must be told: no broker, no daemon, no answer."""


def _client_id() -> str:
    # A unique id, so several CLI calls (and the daemon) never kick each other off the broker.
    return f"carlightd-cli-{uuid.uuid4().hex[:12]}"


def _client(settings: Settings) -> aiomqtt.Client:
    return make_client(settings, _client_id(), will=None)


async def _view(
    settings: Settings,
    topics: Sequence[str],
    handle: Callable[[aiomqtt.Message], bool],
    on_connection: Callable[[bool], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Follow as a command-line viewer does: with an id of its own, and no broker at first is a
    `ClientError` (said, not waited on); a connection lost later is made again."""
    try:
        await follow(
            settings,
            topics,
            handle,
            client_id=_client_id(),
            stop=stop,
            on_connection=on_connection,
            must_connect_first=True,
        )
    except aiomqtt.MqttError as error:
        raise _unreachable(settings, error) from None


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _unreachable(settings: Settings, error: Exception) -> ClientError:
    mqtt = settings.mqtt
    return ClientError(f"cannot reach the MQTT broker at {mqtt.host}:{mqtt.port}: {error}")


async def send_command(
    settings: Settings, command: str, body: dict[str, Any], timeout_s: float = RESPONSE_TIMEOUT_S
) -> OkResponse | ErrorResponse:
    """Publish a request and wait for the response that echoes our transaction. Only the
    contract's commands are sent; the body is checked by the daemon, which says what is wrong."""
    if command not in COMMANDS:
        raise ClientError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    transaction = uuid.uuid4().hex
    payload = json.dumps({**body, "transaction": transaction}).encode()
    try:
        async with _client(settings) as client:
            await client.subscribe(topics.response(command), qos=1)
            await client.publish(topics.request(command), payload, qos=1)
            try:
                async with asyncio.timeout(timeout_s):
                    async for message in client.messages:
                        if not message.topic.matches(topics.response(command)):
                            continue  # some brokers also hand over other retained messages
                        try:
                            data = json.loads(payload_bytes(message.payload))
                        except ValueError:
                            continue
                        if not isinstance(data, dict) or data.get("transaction") != transaction:
                            continue  # somebody else's answer
                        if data.get("status") == "ok":
                            return OkResponse.model_validate(data)
                        return ErrorResponse.model_validate(data)
            except TimeoutError:
                raise ClientError(
                    f"no response from vehicle {settings.vehicle.id!r} within {timeout_s:g} s "
                    f"on {topics.root} (is `carlightd run` running with this configuration?)"
                ) from None
    except aiomqtt.MqttError as error:
        raise _unreachable(settings, error) from None
    raise ClientError("the broker closed the connection")  # pragma: no cover


async def current_faults(
    settings: Settings,
    timeout_s: float = RETAINED_WAIT_S,
    *,
    warn: Callable[[str], None] = _warn,
) -> tuple[FaultsPayload | None, str | None]:
    """The retained fault list and availability, as a subscriber would see them on arrival.

    A malformed fault list is a `ClientError` (there is nothing true to show); a malformed
    availability is a warning, and the faults are shown with their availability unknown."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    faults: FaultsPayload | None = None
    availability: str | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    deadline: list[asyncio.TimerHandle] = []

    def connected(up: bool) -> None:
        # Retained messages arrive right after subscribing: what is not there by now, is not.
        if up and not deadline:
            deadline.append(loop.call_later(timeout_s, stop.set))

    def handle(message: aiomqtt.Message) -> bool:
        nonlocal faults, availability
        topic = str(message.topic)
        below = relative(topics.root, topic) or ""
        try:
            received = parse(below, payload_bytes(message.payload))
        except Malformed as problem:
            if below == "faults":
                raise ClientError(
                    f"the fault list on {clean(topic)} is malformed, so it is not "
                    f"shown: {clean(problem, 200)}"
                ) from None
            warn(warning(topic, problem))
            availability = "availability malformed"
            return False
        if received is None:
            return False  # some brokers also hand over other retained messages
        if isinstance(received.value, FaultsPayload):
            faults = received.value
        elif isinstance(received.value, str):
            availability = received.value
        return faults is not None and availability is not None

    try:
        await _view(settings, [topics.faults, topics.availability], handle, connected, stop)
    finally:
        for timer in deadline:
            timer.cancel()
    return faults, availability


def format_faults(faults: FaultsPayload, availability: str | None) -> str:
    """The fault list as plain lines; every received string made safe for a terminal."""
    lit = [name for name, on in faults.warning_lamps.model_dump().items() if on]
    lines = [
        f"vehicle {clean(faults.vehicle)} ({clean(availability or 'availability unknown')}), "
        f"updated {faults.updated_at.isoformat()}",
        f"warning lamps: {', '.join(lit) if lit else 'none'}",
    ]
    if not faults.faults:
        lines.append("no faults")
    for fault in faults.faults:
        cause = f"  (consequence of {clean(fault.consequence_of)})" if fault.consequence_of else ""
        lines.append(
            f"{clean(fault.dtc)}  {fault.status:<9}  {clean(fault.component):<18} "
            f"{clean(fault.failure):<14} since {fault.since.isoformat()}{cause}"
        )
    return "\n".join(lines)


def faults_json(faults: FaultsPayload) -> str:
    """The fault list as JSON for `faults --json`: every non-ASCII character escaped (`\\u009b`),
    so a C1 control or a bidi override in a field reaches the terminal as text, not as itself."""
    return json.dumps(json.loads(faults.model_dump_json()), indent=2, ensure_ascii=True)


async def watch_live(
    settings: Settings, console: Console, *, until: Callable[[WatchState], bool] = lambda s: False
) -> WatchState:
    """A live table of every part and the faults, redrawn as messages arrive (on a terminal).

    A payload that cannot be shown is one warning line above the table, and the view goes on."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    state = WatchState(topics.root)
    with contextlib.ExitStack() as screen:
        lives: list[Live] = []  # the table, once the broker has been reached

        def connected(up: bool) -> None:
            if up and not lives:
                live = Live(render(state), console=console, refresh_per_second=4)
                lives.append(screen.enter_context(live))

        def handle(message: aiomqtt.Message) -> bool:
            live, topic = lives[0], str(message.topic)
            try:
                state.fold(topic, payload_bytes(message.payload))
                live.update(render(state))
            except Exception as error:  # a viewer shows the problem and goes on
                live.console.print(Text(_skipped(topic, error), style="yellow"), soft_wrap=True)
            return until(state)

        followed = [f"{topics.root}/{below}" for below in WATCH_LIVE_TOPICS]
        await _view(settings, followed, handle, connected)
    return state


def _skipped(topic: str, error: Exception) -> str:
    if isinstance(error, Malformed):
        return warning(topic, error)
    # Not the payload's fault but ours: still one line, naming the error, never a traceback.
    return warning(topic, f"{type(error).__name__}: {error}").replace(
        "skipped a malformed payload", "could not show the payload", 1
    )


def plain_line(received: Received) -> str | None:
    """One line of `watch`'s plain output for a validated message (None: nothing to print)."""
    value = received.value
    if isinstance(value, EventPayload):
        return (
            f"{value.at.isoformat()}  #{value.seq:<5} {value.type:<16} "
            f"{clean(value.component)} {clean(value.failure)} {clean(value.dtc)}"
        )
    if isinstance(value, FaultsPayload):
        summary = ", ".join(f"{clean(f.component)}:{clean(f.failure)}" for f in value.faults)
        return f"faults: {summary or 'none'}"
    if isinstance(value, DtcsPayload):
        # The stored DTCs, apart from the active faults: what a workshop would read out.
        lines = [f"stored DTCs: {len(value.dtcs) or 'none'}"]
        lines += [f"  {dtc_line(dtc)}" for dtc in value.dtcs[:SHOWN_DTCS]]
        if len(value.dtcs) > SHOWN_DTCS:
            lines.append(f"  … and {len(value.dtcs) - SHOWN_DTCS} more")
        return "\n".join(lines)
    if isinstance(value, str):
        return f"daemon {value}"
    return None


async def watch(
    settings: Settings,
    out: TextIO,
    *,
    until: Callable[[], bool] = lambda: False,
    warn: Callable[[str], None] = _warn,
) -> None:
    """Print faults, stored DTCs and events as they happen, until interrupted.

    A payload that cannot be shown is one warning line (on stderr by default), and it goes on."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    announced: list[bool] = []

    def connected(up: bool) -> None:
        if up and not announced:
            print(f"watching {clean(topics.root)} (Ctrl-C to stop)", file=out, flush=True)
            announced.append(True)

    def handle(message: aiomqtt.Message) -> bool:
        topic = str(message.topic)
        try:
            received = parse(relative(topics.root, topic) or "", payload_bytes(message.payload))
            line = None if received is None else plain_line(received)
        except Exception as error:  # a viewer shows the problem and goes on
            warn(_skipped(topic, error))
            line = None
        if line is not None:
            print(line, file=out, flush=True)
        return until()

    followed = [topics.availability, topics.faults, topics.dtcs, topics.events]
    await _view(settings, followed, handle, connected)
