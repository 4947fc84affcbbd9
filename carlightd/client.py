"""Talking to a running daemon over MQTT, like any other consumer: the CLI's client commands."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import aiomqtt
from rich.console import Console
from rich.live import Live

from carlightd.config import Settings
from carlightd.service.mqtt import make_client
from carlightd.service.payloads import (
    ErrorResponse,
    EventPayload,
    FaultsPayload,
    OkResponse,
    Topics,
    payload_bytes,
)
from carlightd.terminal import WatchState, render

RESPONSE_TIMEOUT_S = 5.0
RETAINED_WAIT_S = 2.0


class ClientError(Exception):
    """Something a user must be told: no broker, no daemon, no answer."""


def _client(settings: Settings) -> aiomqtt.Client:
    # A unique id, so several CLI calls (and the daemon) never kick each other off the broker.
    return make_client(settings, f"carlightd-cli-{uuid.uuid4().hex[:12]}", will=None)


def _unreachable(settings: Settings, error: Exception) -> ClientError:
    mqtt = settings.mqtt
    return ClientError(f"cannot reach the MQTT broker at {mqtt.host}:{mqtt.port}: {error}")


async def send_command(
    settings: Settings, command: str, body: dict[str, Any], timeout_s: float = RESPONSE_TIMEOUT_S
) -> OkResponse | ErrorResponse:
    """Publish a request and wait for the response that echoes our transaction."""
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
    settings: Settings, timeout_s: float = RETAINED_WAIT_S
) -> tuple[FaultsPayload | None, str | None]:
    """The retained fault list and availability, as a subscriber would see them on arrival."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    faults: FaultsPayload | None = None
    availability: str | None = None
    try:
        async with _client(settings) as client:
            await client.subscribe(topics.faults, qos=1)
            await client.subscribe(topics.availability, qos=1)
            try:
                async with asyncio.timeout(timeout_s):
                    async for message in client.messages:
                        if message.topic.matches(topics.faults):
                            faults = FaultsPayload.model_validate_json(
                                payload_bytes(message.payload)
                            )
                        else:
                            availability = payload_bytes(message.payload).decode(errors="replace")
                        if faults is not None and availability is not None:
                            break
            except TimeoutError:
                pass
    except aiomqtt.MqttError as error:
        raise _unreachable(settings, error) from None
    return faults, availability


def format_faults(faults: FaultsPayload, availability: str | None) -> str:
    lit = [name for name, on in faults.warning_lamps.model_dump().items() if on]
    lines = [
        f"vehicle {faults.vehicle} ({availability or 'availability unknown'}), "
        f"updated {faults.updated_at.isoformat()}",
        f"warning lamps: {', '.join(lit) if lit else 'none'}",
    ]
    if not faults.faults:
        lines.append("no faults")
    for fault in faults.faults:
        cause = f"  (consequence of {fault.consequence_of})" if fault.consequence_of else ""
        lines.append(
            f"{fault.dtc}  {fault.status:<9}  {fault.component:<18} {fault.failure:<14} "
            f"since {fault.since.isoformat()}{cause}"
        )
    return "\n".join(lines)


async def watch_live(
    settings: Settings, console: Console, *, until: Callable[[WatchState], bool] = lambda s: False
) -> WatchState:
    """A live table of every part and the faults, redrawn as messages arrive (on a terminal)."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    state = WatchState(topics.root)
    try:
        async with _client(settings) as client:
            await client.subscribe(f"{topics.root}/availability", qos=1)
            await client.subscribe(f"{topics.root}/faults", qos=1)
            await client.subscribe(f"{topics.root}/components/+", qos=1)
            await client.subscribe(f"{topics.root}/events", qos=1)
            with Live(render(state), console=console, refresh_per_second=4) as live:
                async for message in client.messages:
                    state.fold(str(message.topic), payload_bytes(message.payload))
                    live.update(render(state))
                    if until(state):
                        break
    except aiomqtt.MqttError as error:
        raise _unreachable(settings, error) from None
    return state


async def watch(
    settings: Settings, out: TextIO, *, until: Callable[[], bool] = lambda: False
) -> None:
    """Print faults and events as they happen, one line each, until interrupted."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    try:
        async with _client(settings) as client:
            for topic in (topics.availability, topics.faults, topics.events):
                await client.subscribe(topic, qos=1)
            print(f"watching {topics.root} (Ctrl-C to stop)", file=out, flush=True)
            async for message in client.messages:
                payload = payload_bytes(message.payload)
                if message.topic.matches(topics.events):
                    event = EventPayload.model_validate_json(payload)
                    line = (
                        f"{event.at.isoformat()}  #{event.seq:<5} {event.type:<16} "
                        f"{event.component} {event.failure} {event.dtc}"
                    )
                elif message.topic.matches(topics.faults):
                    faults = FaultsPayload.model_validate_json(payload)
                    summary = ", ".join(f"{f.component}:{f.failure}" for f in faults.faults)
                    line = f"faults: {summary or 'none'}"
                else:
                    line = f"daemon {payload.decode(errors='replace')}"
                print(line, file=out, flush=True)
                if until():
                    return
    except aiomqtt.MqttError as error:
        raise _unreachable(settings, error) from None
