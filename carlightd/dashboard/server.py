"""`carlightd dashboard`: a web page that shows the car live, fed from MQTT like any consumer.

The server subscribes to the daemon's topics, keeps the latest of each, and streams them to every
open page with Server-Sent Events; the page's break and repair buttons become MQTT requests. All
assets are in the package: the page works without the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiomqtt
from aiohttp import web

from carlightd import logs
from carlightd.client import ClientError, send_command
from carlightd.config import Settings
from carlightd.domain import FAILURES, Kind
from carlightd.service.commands import REQUESTS
from carlightd.service.mqtt import backoff_delays, cancel_and_wait, make_client
from carlightd.service.payloads import Topics, payload_bytes

log = logs.get("carlightd.dashboard")

SUBSCRIBER_QUEUE = 256  # per open page; a page that cannot keep up is sent a fresh snapshot


class LiveState:
    """The latest message of every topic under the vehicle's root, and who is listening."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
        self.latest: dict[str, Any] = {}  # topic -> parsed payload (availability as text)
        self.events: list[Any] = []
        self.broker_connected = False
        self.listeners: set[asyncio.Queue[str]] = set()

    def snapshot(self) -> dict[str, Any]:
        parts = [
            {
                "id": c.id,
                "kind": c.kind,
                "function": getattr(c, "function", None),
                "failures": list(FAILURES[Kind(c.kind)]),
            }
            for c in self.settings.components
        ]
        return {
            "type": "snapshot",
            "root": self.topics.root,
            "vehicle": self.settings.vehicle.id,
            "commands": self.settings.commands.enabled,
            "parts": parts,
            "broker": self.broker_connected,
            "latest": self.latest,
            "events": self.events[-20:],
        }

    def fold(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        relative = topic[len(self.topics.root) + 1 :]
        if relative == "availability":
            value: Any = payload.decode(errors="replace")
        else:
            try:
                value = json.loads(payload) if payload else None
            except ValueError:
                return None
        if relative == "events":
            self.events = [*self.events[-19:], value]
        elif relative in ("availability", "faults", "telemetry") or relative.startswith(
            "components/"
        ):
            self.latest[relative] = value
        else:
            return None  # requests and responses are not the page's business
        return {"type": "update", "topic": relative, "value": value}

    def broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        for queue in list(self.listeners):
            if queue.full():  # a slow page: drop its backlog, give it the whole picture anew
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(json.dumps(self.snapshot()))
            else:
                queue.put_nowait(text)


STATE: web.AppKey[LiveState] = web.AppKey("state", LiveState)


async def follow_broker(state: LiveState, stop: asyncio.Event) -> None:
    """Subscribe to the vehicle's topics and keep the state current; reconnect with backoff.

    Returns when `stop` is set, leaving the MQTT connection by the front door (no cancellation
    inside the client's context, which would leave its socket to the garbage collector)."""
    delays = backoff_delays(random.Random())
    settings = state.settings

    async def consume(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            update = state.fold(str(message.topic), payload_bytes(message.payload))
            if update is not None:
                state.broadcast(update)

    while not stop.is_set():
        client = make_client(settings, f"carlightd-dashboard-{id(state):x}", will=None)
        delay = 0.0
        try:
            async with client:
                await client.subscribe(f"{state.topics.root}/#", qos=1)
                state.broker_connected = True
                state.broadcast({"type": "broker", "connected": True})
                delays = backoff_delays(random.Random())
                consumer = asyncio.ensure_future(consume(client))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait([consumer, stopped], return_when=asyncio.FIRST_COMPLETED)
                await cancel_and_wait(stopped)
                if not consumer.done():
                    await cancel_and_wait(consumer)
                elif consumer.exception() is not None:
                    raise consumer.exception()  # type: ignore[misc]
        except aiomqtt.MqttError as error:
            delay = next(delays)
            log.warning(
                "dashboard_broker_unreachable", error=str(error), retry_in_s=round(delay, 2)
            )
        state.broker_connected = False
        state.broadcast({"type": "broker", "connected": False})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()


async def index(request: web.Request) -> web.Response:
    page = (resources.files("carlightd.dashboard") / "static" / "index.html").read_text("utf-8")
    return web.Response(text=page, content_type="text/html")


async def stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
    state.listeners.add(queue)
    try:
        await response.write(f"data: {json.dumps(state.snapshot())}\n\n".encode())
        while True:
            try:
                async with asyncio.timeout(15):
                    text = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(f"data: {text}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.listeners.discard(queue)
    return response


async def command(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"status": "error", "error": "body is not JSON"}, status=400)
    name = body.get("command") if isinstance(body, dict) else None
    arguments = body.get("body", {}) if isinstance(body, dict) else {}
    if name not in REQUESTS or not isinstance(arguments, dict):
        return web.json_response({"status": "error", "error": "unknown command"}, status=400)
    try:
        response = await send_command(state.settings, name, arguments)
    except ClientError as error:
        return web.json_response({"status": "error", "error": str(error)}, status=502)
    return web.json_response(json.loads(response.encode()))


@contextlib.asynccontextmanager
async def serving(settings: Settings, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
    """Run the dashboard (HTTP and the MQTT follower) until the context exits."""
    state = LiveState(settings)
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/", index)
    app.router.add_get("/stream", stream)
    app.router.add_post("/api/command", command)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][:2] if runner.addresses else (host, port)
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_broker(state, stop), name="dashboard-mqtt")
    try:
        yield bound[0], bound[1]
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await follower
        await runner.cleanup()


async def run(settings: Settings, host: str, port: int, announce: Any = print) -> None:
    import signal  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings, host, port) as (bound_host, bound_port):
        announce(f"carlightd dashboard: http://{bound_host}:{bound_port}/  (Ctrl-C stops it)")
        await stop.wait()
