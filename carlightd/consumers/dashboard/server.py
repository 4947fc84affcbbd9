"""`carlightd dashboard`: a web page that shows the car live, fed from MQTT like any consumer.

The server subscribes to the daemon's topics, keeps the latest of each, and streams them to every
open page with Server-Sent Events; the page's workshop controls, one per command of the contract's
registry (`carlightd.contract.commands`), become MQTT requests. All assets are in the package: the
page works without the internet.

What arrives over MQTT is hostile data: each payload is validated against the contract's models
(`carlightd.consumers.received`) and only the validated form reaches a page; a bad one becomes a
note on the page. The page puts data in the DOM as text only, under a Content-Security-Policy that
allows no inline script and (Trusted Types) no HTML from strings. Commands and the stream are
served only to the dashboard's own page: the `Host` must be the dashboard's address (a DNS-
rebinding page's name is not), a browser's `Origin` must be that address too, and a command must be
JSON (a cross-site form cannot send that without asking first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import random
import socket
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiomqtt
from aiohttp import hdrs, web
from yarl import URL

from carlightd import logs
from carlightd.config import Settings
from carlightd.consumers.client import ClientError, send_command
from carlightd.consumers.follower import follow as follow_topics
from carlightd.consumers.received import Malformed, parse, relative
from carlightd.consumers.terminal import clean
from carlightd.contract.commands import COMMANDS
from carlightd.contract.payloads import TelemetryPayload, Topics, payload_bytes
from carlightd.core.domain import Kind
from carlightd.core.kinds import FAILURES
from carlightd.runtime import signals
from carlightd.runtime.connection import backoff_delays
from carlightd.runtime.waiting import wait_any

log = logs.get("carlightd.dashboard")

SUBSCRIBER_QUEUE = 256  # per open page; a page that cannot keep up is sent a fresh snapshot
NOTES_KEPT = 20  # the last skipped payloads, shown to every page that opens
FOLLOWER_HEALTHY_S = 60.0  # a follower that ran this long before failing starts its backoff over

# What the page may do: its own script and style, talk to its own server; no inline script, no
# plugin, no frame around it, no HTML made from strings (Trusted Types), no form posting away.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ASSETS = {  # path -> (file in static/, content type)
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
    "/chart.js": ("chart.js", "text/javascript"),
    # The chart library, shipped in the package (static/vendor/README.md: version, licence).
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
# The page's scripts, in the order index.html loads them (the tests check there are no others).
SCRIPTS = ("vendor/uPlot.iife.min.js", "chart.js", "app.js")
HISTORY_S = 300.0  # the chart's window: the last five minutes of telemetry, by its own clock
# At most this many points in the window (one a second would be 300): anyone who may publish on
# ROOT/telemetry could send thousands a second, and every page gets the history in its snapshot.
HISTORY_POINTS = 1200


def chart_point(telemetry: dict[str, Any], at: datetime) -> list[float | None]:
    """One point of the chart from a validated telemetry payload (as JSON data): time (Unix
    seconds), bus voltage, battery current (positive = discharging), battery temperature (the
    payload's `temperature_c`, else the battery reading's) and the commanded charging set-point
    (`setpoint_v`, when telemetry carries it). The battery's reading is a free-form object in the
    contract: a value that is not a finite number is a gap, never an error."""

    def number(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    battery = telemetry.get("battery")
    battery = battery if isinstance(battery, dict) else {}
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    temperature = number(telemetry.get("temperature_c"))
    return [
        round(at.timestamp(), 3),
        number(telemetry.get("bus_v")),
        number(battery.get("current_a")),
        number(battery.get("temperature_c")) if temperature is None else temperature,
        number(telemetry.get("setpoint_v")),
    ]


def command_forms() -> list[dict[str, Any]]:
    """The workshop's controls, one per command of the contract's registry, for the page to draw:
    what each argument names (a part, one of that part's failures, one of fixed choices)."""
    return [
        {
            "name": command.name,
            "label": command.label,
            "description": command.description,
            "arguments": [
                {"field": a.field, "names": a.names, "choices": list(command.choices(a))}
                for a in command.arguments
            ],
            "options": [
                {"field": o.field, "label": o.field, "help": o.help} for o in command.options
            ],
        }
        for command in COMMANDS.values()
    ]


class LiveState:
    """The latest validated message of every topic the page shows, and who is listening."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
        self.parts = {c.id for c in settings.components}
        self.latest: dict[str, Any] = {}  # relative topic -> validated payload as JSON data
        self.events: list[Any] = []
        self.history: deque[list[float | None]] = deque(maxlen=HISTORY_POINTS)  # oldest first
        self.notes: deque[dict[str, str]] = deque(maxlen=NOTES_KEPT)
        self.stale: str | None = None  # why the data shown may be old, until fresh data arrives
        self.received = 0  # valid messages taken in
        self.broker_connected = False
        self.listeners: set[asyncio.Queue[str]] = set()

    def snapshot(self) -> dict[str, Any]:
        parts = [
            {
                "id": c.id,
                "kind": c.kind,
                "function": getattr(c, "function", None),
                "failures": list(FAILURES[Kind(c.kind)]),
                # What a fuse feeds and a ground point serves: the page lists them.
                "feeds": getattr(c, "feeds", None),
                "serves": getattr(c, "serves", None),
            }
            for c in self.settings.components
        ]
        return {
            "type": "snapshot",
            "root": self.topics.root,
            "vehicle": self.settings.vehicle.id,
            "commands": self.settings.commands.enabled,
            "workshop": command_forms(),
            "parts": parts,
            "broker": self.broker_connected,
            "latest": self.latest,
            "events": self.events[-20:],
            "history": list(self.history),
            "history_s": HISTORY_S,
            "history_points": HISTORY_POINTS,
            "notes": list(self.notes),
            "stale": self.stale,
        }

    def fold(self, topic: str, payload: bytes) -> list[dict[str, Any]]:
        """Take in one message; what to tell the pages (nothing for a topic the page ignores)."""
        below = relative(self.topics.root, topic)
        if below is None:
            return []
        try:
            received = parse(below, payload)
            if received is None:
                return []  # a topic this page does not show
            if received.component is not None and received.component not in self.parts:
                return []  # a part this page does not draw (nor keep in memory)
            value = received.value
            # The model's own JSON: NaN and infinities become null, so every page can parse it.
            data = value if isinstance(value, str) else json.loads(value.model_dump_json())
        except (Malformed, ValueError) as problem:
            return [self.note(f"skipped a malformed payload on {topic}: {problem}")]
        self.received += 1
        messages: list[dict[str, Any]] = []
        if self.stale is not None:
            self.stale = None
            messages.append({"type": "stale", "stale": None})
        if below == "events":
            self.events = [*self.events[-19:], data]
        else:
            self.latest[below] = data
        messages.append({"type": "update", "topic": below, "value": data})
        if isinstance(value, TelemetryPayload) and isinstance(data, dict):
            point = chart_point(data, value.at)
            self.remember(point)
            messages.append({"type": "point", "point": point})
        return messages

    def remember(self, point: list[float | None]) -> None:
        """Keep the chart's last `HISTORY_S` seconds. A point older than the newest starts the
        history over (a daemon restarted with another clock, or a stale retained message); the
        page does the same with the points it is sent."""
        at = point[0]
        assert at is not None
        if self.history and at < (self.history[-1][0] or 0.0):
            self.history.clear()
        self.history.append(point)
        while (self.history[0][0] or 0.0) < at - HISTORY_S:
            self.history.popleft()

    def note(self, text: str) -> dict[str, Any]:
        text = text if len(text) <= 300 else text[:299] + "…"
        log.warning("dashboard_payload_skipped", note=clean(text, 300))
        note = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "text": text}
        self.notes.append(note)
        return {"type": "note", "note": note}

    def mark_stale(self, why: str) -> dict[str, Any]:
        self.stale = why
        return {"type": "stale", "stale": why}

    def broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)  # ASCII only: no raw line break can end an SSE event early
        for queue in list(self.listeners):
            if queue.full():  # a slow page: drop its backlog, give it the whole picture anew
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(json.dumps(self.snapshot()))
            else:
                queue.put_nowait(text)


STATE: web.AppKey[LiveState] = web.AppKey("state", LiveState)


async def follow_broker(state: LiveState, stop: asyncio.Event) -> None:
    """Subscribe to the vehicle's topics and keep the state current, through the consumers' one
    follower (it reconnects with backoff, and returns when `stop` is set). A malformed payload is
    a note, not an error; anything else that goes wrong is raised, and `supervise` starts the
    follower again."""

    def handle(message: aiomqtt.Message) -> bool:
        for update in state.fold(str(message.topic), payload_bytes(message.payload)):
            state.broadcast(update)
        return False  # a dashboard follows until it is stopped

    def connection(connected: bool) -> None:
        state.broker_connected = connected
        state.broadcast({"type": "broker", "connected": connected})

    await follow_topics(
        state.settings,
        [f"{state.topics.root}/#"],
        handle,
        client_id=f"carlightd-dashboard-{id(state):x}",
        stop=stop,
        on_connection=connection,
    )


async def supervise(
    state: LiveState,
    stop: asyncio.Event,
    follow: Callable[[LiveState, asyncio.Event], Awaitable[None]] = follow_broker,
) -> None:
    """Keep the follower running: if it fails, say so on the page (the data shown is stale until
    fresh data arrives) and start it again, with backoff."""
    loop = asyncio.get_running_loop()
    delays = backoff_delays(random.Random())
    while not stop.is_set():
        started = loop.time()
        try:
            await follow(state, stop)
        except Exception as error:  # the follower must come back, whatever took it down
            if loop.time() - started >= FOLLOWER_HEALTHY_S:
                delays = backoff_delays(random.Random())
            delay = next(delays)
            log.error(
                "dashboard_follower_failed",
                error=clean(f"{type(error).__name__}: {error}", 300),
                retry_in_s=round(delay, 2),
                exc_info=True,
            )
            state.broker_connected = False
            state.broadcast({"type": "broker", "connected": False})
            why = f"the dashboard's MQTT follower failed ({type(error).__name__}); restarting it"
            state.broadcast(state.mark_stale(why))
        else:
            return  # stopped
        await wait_any(stop, timeout_s=delay)


@dataclass(frozen=True)
class Address:
    """Where the dashboard listens, and so which `Host` and `Origin` its own page sends."""

    names: frozenset[str]  # host names and IP literals (lower case, IPv6 without brackets)
    port: int
    any_ip: bool  # bound to every interface: any IP literal reaches it (no DNS, no rebinding)

    @classmethod
    def bound(cls, requested: str, sockets: Iterable[tuple[Any, ...]], port: int) -> Address:
        hosts = {requested.strip("[]").lower()} | {str(s[0]).lower() for s in sockets}
        hosts.discard("")
        ips = [ip for ip in (_ip(h) for h in hosts) if ip is not None]
        any_ip = not hosts or any(ip.is_unspecified for ip in ips)
        names = set(hosts)
        if any(ip.is_loopback for ip in ips) or "localhost" in hosts or any_ip:
            names |= {"localhost", "127.0.0.1", "::1"}
        if any_ip or any(not ip.is_loopback for ip in ips):
            machine = socket.gethostname().lower()  # the names a LAN user types for this machine
            names |= {machine, f"{machine}.local", socket.getfqdn().lower()}
        return cls(frozenset(names), port, any_ip)

    def accepts(self, host_header: str) -> bool:
        split = _split_host(host_header)
        if split is None or split[1] != self.port:
            return False
        name = split[0]
        return name in self.names or (self.any_ip and _ip(name) is not None)

    def same_origin(self, origin: str, host_header: str) -> bool:
        """Is `origin` exactly this server, as addressed by the (accepted) Host header?"""
        try:
            url = URL(origin)
        except ValueError:
            return False
        split = _split_host(host_header)
        return (
            split is not None
            and url.scheme == "http"
            and (url.host or "").strip("[]").lower() == split[0]
            and url.port == split[1]
            and url.path in ("", "/")
        )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_host(header: str) -> tuple[str, int] | None:
    """`Host` as (name, port): `example:8080`, `[::1]:8080`, `example` (port 80); else None."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else "80"
    else:
        name, colon, port = header.partition(":")
        if not colon:
            port = "80"
        if ":" in port:  # an unbracketed IPv6 address
            return None
    if not name or not port.isdigit() or len(port) > 5:
        return None
    return name, int(port)


@dataclass
class Listening:
    """The dashboard's address, known once it is bound (port 0 picks one), and how many requests
    it refused, by reason (`host`, `origin`, `sec-fetch-site`, `content-type`)."""

    address: Address | None = None
    refused: Counter[str] = field(default_factory=Counter)


LISTENING: web.AppKey[Listening] = web.AppKey("listening", Listening)


def refuse(request: web.Request, reason: str, why: str, **seen: str) -> web.Response:
    request.app[LISTENING].refused[reason] += 1
    shown = {name: clean(value, 100) for name, value in seen.items()}
    log.warning("dashboard_request_refused", reason=reason, path=request.path, **shown)
    return web.json_response({"status": "error", "error": why}, status=403)


@web.middleware
async def host_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Only requests addressed to the dashboard by its own name: a DNS-rebinding page reaches us
    by the attacker's name, and is refused here, before any route."""
    host = request.headers.get(hdrs.HOST, "")
    address = request.app[LISTENING].address
    if address is None or not address.accepts(host):
        return refuse(request, "host", "this dashboard does not answer to that Host", host=host)
    return await handler(request)


def cross_site(request: web.Request) -> web.Response | None:
    """A 403 for a request a browser made on behalf of another site, else None."""
    origin = request.headers.get(hdrs.ORIGIN)
    address = request.app[LISTENING].address
    if origin is not None and (
        address is None or not address.same_origin(origin, request.headers.get(hdrs.HOST, ""))
    ):
        why = "cross-origin request refused: only the dashboard's own page may do this"
        return refuse(request, "origin", why, origin=origin)
    site = request.headers.get("Sec-Fetch-Site", "")
    if site in ("cross-site", "same-site"):
        why = "cross-site request refused: only the dashboard's own page may do this"
        return refuse(request, "sec-fetch-site", why, site=site)
    return None


async def asset(request: web.Request) -> web.Response:
    name, content_type = ASSETS[request.path]
    files = resources.files("carlightd.consumers.dashboard") / "static"
    text = files.joinpath(*name.split("/")).read_text("utf-8")
    return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)  # nothing to show, and no 404 in the browser's console


async def stream(request: web.Request) -> web.StreamResponse:
    refused = cross_site(request)
    if refused is not None:
        return refused
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
    refused = cross_site(request)
    if refused is not None:
        return refused
    if request.content_type != "application/json":
        # A cross-site form or a "simple" fetch can send text/plain without asking; JSON cannot.
        why = "a command must be sent as application/json"
        return refuse(request, "content-type", why, content_type=request.content_type)
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"status": "error", "error": "body is not JSON"}, status=400)
    name = body.get("command") if isinstance(body, dict) else None
    arguments = body.get("body", {}) if isinstance(body, dict) else {}
    if not isinstance(name, str) or name not in COMMANDS or not isinstance(arguments, dict):
        return web.json_response({"status": "error", "error": "unknown command"}, status=400)
    try:
        response = await send_command(state.settings, name, arguments)
    except ClientError as error:
        return web.json_response({"status": "error", "error": str(error)}, status=502)
    return web.json_response(json.loads(response.encode()))


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, host: str, port: int, listening: Listening | None = None
) -> AsyncIterator[tuple[str, int]]:
    """Run the dashboard (HTTP and the MQTT follower) until the context exits. `listening`, if
    given, is filled in with the bound address and counts the refused requests."""
    state = LiveState(settings)
    app = web.Application(middlewares=[host_guard])
    app[STATE] = state
    listening = app[LISTENING] = listening or Listening()
    app.on_response_prepare.append(security_headers)
    for path in ASSETS:
        app.router.add_get(path, asset)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/stream", stream)
    app.router.add_post("/api/command", command)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][:2] if runner.addresses else (host, port)
    listening.address = Address.bound(host, runner.addresses, bound[1])
    stop = asyncio.Event()
    follower = asyncio.create_task(supervise(state, stop), name="dashboard-mqtt")
    try:
        yield bound[0], bound[1]
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await follower
        await runner.cleanup()


async def run(settings: Settings, host: str, port: int, announce: Any = print) -> None:
    stop = asyncio.Event()
    with signals.stopping(stop.set):
        async with serving(settings, host, port) as (bound_host, bound_port):
            announce(f"carlightd dashboard: http://{bound_host}:{bound_port}/  (Ctrl-C stops it)")
            await stop.wait()
