"""The dashboard treats MQTT data and other web pages as hostile, checked in Debian's Chromium and
with plain HTTP: hostile retained payloads are shown as text or skipped with a note, a follower that
dies comes back and says the data is stale meanwhile, and only the dashboard's own page may send a
command or read the stream (Origin, Host against DNS rebinding, JSON content type)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web

from carlightd.app.daemon import Service
from carlightd.config import Settings
from carlightd.consumers.dashboard import server
from carlightd.consumers.dashboard.server import LiveState, serving
from carlightd.contract.payloads import (
    ComponentPayload,
    DtcPayload,
    DtcsPayload,
    FaultPayload,
    FaultsPayload,
    FreezeFramePayload,
    TelemetryPayload,
    WarningLamps,
)
from carlightd.core.domain import Ignition
from tests.brokers import subscribed
from tests.conftest import running, service_settings, wait_until
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, playwright

expect = playwright.expect

SCREENSHOT = Path(__file__).parents[1] / "build" / "screenshots" / "dashboard-hostile.png"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
JS_URL = "javascript:window.__pwned=3"
SVG = "<svg onload=window.__pwned=4>"


def component(part: str, status: str = "ok", **fields: Any) -> bytes:
    values: dict[str, Any] = {
        "component": part,
        "kind": "lamp",
        "status": status,
        "failure": None,
        "dtc": None,
        "dtc_status": None,
        "reason": None,
        "reading": {"current_a": 2.1, "commanded_on": True},
        "updated_at": NOW,
        **fields,
    }
    return ComponentPayload(**values).encode()


def fault_list(*faults: FaultPayload) -> bytes:
    lamps = WarningLamps(bulb=bool(faults), battery=False, check_engine=False)
    return FaultsPayload(
        vehicle="demo-car", updated_at=NOW, warning_lamps=lamps, faults=list(faults)
    ).encode()


def telemetry(bus_v: float) -> bytes:
    return TelemetryPayload(
        vehicle="demo-car",
        at=NOW,
        ignition="run",
        engine_rpm=800,
        bus_v=bus_v,
        battery=None,
        alternator=None,
    ).encode()


RETAINED: set[tuple[str, str]] = set()  # (root, topic) published retained by a test


async def publish(settings: Settings, messages: dict[str, bytes], *, retain: bool) -> None:
    """Publish under the settings' ROOT (topics relative to it), as anybody on the broker can."""
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    host, port = settings.mqtt.host, settings.mqtt.port
    async with aiomqtt.Client(host, port, identifier=f"test-pub-{uuid.uuid4().hex[:8]}") as client:
        for topic, payload in messages.items():
            await client.publish(f"{root}/{topic}", payload, qos=1, retain=retain)
            if retain:
                RETAINED.add((root, topic))


@pytest.fixture
async def retained(broker: tuple[str, int], tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings on a fresh root; the retained messages published under it are cleared after."""
    settings = service_settings(*broker, tmp_path / "state")
    yield settings
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    left = {topic: b"" for (r, topic) in set(RETAINED) if r == root}
    await publish(settings, left, retain=True)  # an empty retained message deletes it


def watch_console(page: Any, problems: list[str]) -> None:
    """Collect the page's console errors (CSP and Trusted Types violations are logged there)
    and uncaught exceptions."""
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))


pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


async def test_hostile_retained_payloads_are_text_or_skipped_and_valid_data_still_shows(
    retained: Settings,
) -> None:
    settings = retained
    browser_problems: list[str] = []
    hostile_fault = FaultPayload(
        component=IMG,
        kind="lamp",
        failure=SCRIPT,
        dtc=JS_URL,
        status="confirmed",
        since=NOW,
        description=SVG,
        consequence_of="y" * 100_000,  # huge, but valid: shown cut, not refused
    )
    await publish(
        settings,
        {
            # Valid by the contract, hostile as text.
            "components/brake_left": component(
                "brake_left", "failed", failure=IMG, dtc=SCRIPT, reason=JS_URL
            ),
            "faults": fault_list(hostile_fault),
            # Invalid: each is skipped with a note, none stops the follower.
            "availability": SVG.encode(),
            "components/tail_left": b'{"component": "tail_left", "status": 5}',
            "components/tail_right": b"<html>" + IMG.encode(),
            "components/headlamp_left": b'{"reading": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            "components/reverse": b'"' + b"x" * 300_000 + b'"',
            "components/brake_right": json.dumps(
                {**json.loads(component("brake_right")), IMG: 1}
            ).encode(),
            "components/license_plate": component("brake_center"),  # a part under another's name
            "telemetry": b"\xff\xfe\x00 not even text",
            "dtcs": b"[[[[",
            # A topic the page does not show: ignored, no note.
            "status": IMG.encode(),
        },
        retain=True,
    )
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1400})
            watch_console(page, browser_problems)
            await page.goto(f"http://{host}:{port}/")
            # (Playwright's `expect`, not `wait_for_function`: the page's CSP forbids eval.)
            await expect(page.locator("#notes li")).to_have_count(9, timeout=15_000)
            await page.wait_for_selector("#part-brake_left.failed")

            # Nothing ran and nothing was parsed as markup: no element came from the data.
            assert await page.evaluate("window.__pwned") is None
            assert (
                await page.evaluate("document.querySelectorAll('img, iframe, svg svg').length") == 0
            )
            assert await page.evaluate("[...document.scripts].map(s => s.src)") == [
                f"http://{host}:{port}/{script}" for script in server.SCRIPTS
            ]
            # The text is shown as it is.
            # (The drawing's label is cut to fit the drawing; its tooltip has the whole text.)
            label = await page.text_content("#part-brake_left text.failure")
            assert label
            assert label.endswith("…")
            assert f"brake_left: {IMG} {SCRIPT}".startswith(label[:-1])
            title = await page.text_content("#part-brake_left title")
            assert f"({IMG}, {SCRIPT})" in (title or "")
            assert JS_URL in (title or "")
            cells = await page.locator("#faults td").all_text_contents()
            assert cells[:4] == [JS_URL, "confirmed", IMG, SCRIPT]
            assert cells[5] == "y" * 119 + "…"  # a huge string is cut on the page
            notes = await page.locator("#notes li").all_text_contents()
            root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
            for topic, why in [
                ("availability", "availability must be 'online' or 'offline'"),
                ("components/tail_left", "kind: Field required (and 7 more problems)"),
                ("components/tail_right", "Invalid JSON"),
                ("components/headlamp_left", "recursion limit exceeded"),
                ("components/reverse", "over the 262144 limit"),
                ("components/brake_right", f"{IMG}: Extra inputs are not permitted"),
                ("components/license_plate", "published on the topic of 'license_plate'"),
                ("telemetry", "Invalid JSON"),
                ("dtcs", "Invalid JSON"),
            ]:
                said = [n for n in notes if f"skipped a malformed payload on {root}/{topic}: " in n]
                assert len(said) == 1, (topic, notes)
                assert why in said[0], (topic, said)
            assert len(notes) == 9  # nothing about ROOT/status: ignored
            assert await page.text_content("#dtcs") == "no fault memory yet"
            assert await page.is_visible("#notes-panel")

            # Valid data after the bad data still updates the page.
            await publish(
                settings,
                {
                    "availability": b"online",
                    "components/tail_left": component("tail_left", "pending", failure="dim"),
                    "components/brake_left": component("brake_left"),
                    "faults": fault_list(),
                },
                retain=True,
            )
            await publish(settings, {"telemetry": telemetry(12.75)}, retain=False)
            await page.wait_for_selector("#part-tail_left.pending", timeout=10_000)
            await page.wait_for_selector("#part-brake_left.ok")
            await page.wait_for_selector("#availability.online")
            await expect(page.locator("#telemetry")).to_contain_text("12.75 V")
            assert await page.text_content("#faults") == "no faults"
            # A stored DTC, valid by the contract, hostile as text, its numbers not numbers.
            frame = FreezeFramePayload(
                at=NOW,
                ignition=Ignition.RUN,
                engine_rpm=812.0,
                bus_v=14.02,
                battery_soc_percent=81.5,
                temperature_c=-3.5,
            )
            dtc = DtcPayload(
                component=IMG,
                kind="lamp",
                failure=SCRIPT,
                dtc=JS_URL,
                dtc_status=0x28,
                occurrences=3,
                aging_counter=2,
                first_failed=NOW,
                last_failed=NOW,
                freeze_frame=frame,
            )
            memory = DtcsPayload(vehicle="demo-car", updated_at=NOW, dtcs=[dtc]).encode()
            memory = memory.replace(b'"bus_v":14.02', b'"bus_v":NaN')
            await publish(settings, {"dtcs": memory}, retain=True)
            await expect(page.locator("#dtcs td")).to_have_count(7, timeout=10_000)
            cells = await page.locator("#dtcs td").all_text_contents()
            assert cells == [
                JS_URL,
                "0x28 confirmed",
                IMG,
                SCRIPT,
                "3",
                "2",
                "run 812 rpm — V 82 % -3.5 °C at 2025-01-01 00:00:00",
            ]
            # A flood of stored DTCs: 40 rows, then how many more.
            flood = [dtc.model_copy(update={"component": f"part{i:03d}"}) for i in range(500)]
            memory = DtcsPayload(vehicle="demo-car", updated_at=NOW, dtcs=flood).encode()
            await publish(settings, {"dtcs": memory}, retain=True)
            await expect(page.locator("#dtcs tr")).to_have_count(41, timeout=10_000)
            await expect(page.locator("#dtcs tr").last).to_have_text("… and 460 more")
            # Not a number is not a crash: NaN and infinities reach the page as "no value".
            bad_numbers = json.loads(telemetry(1.0))
            raw = json.dumps(bad_numbers).replace('"bus_v": 1.0', '"bus_v": NaN')
            await publish(settings, {"telemetry": raw.encode()}, retain=False)
            await expect(page.locator("#telemetry")).to_contain_text("— V")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert await page.evaluate("window.__pwned") is None
        finally:
            await browser.close()
    # No CSP or Trusted Types violation, no exception: the page never tried to make HTML.
    assert browser_problems == []


async def test_a_follower_that_dies_is_restarted_and_the_page_says_stale(
    retained: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = retained
    browser_problems: list[str] = []
    await publish(settings, {"components/brake_left": component("brake_left")}, retain=True)
    broken = asyncio.Event()
    fold = LiveState.fold

    def failing_fold(self: LiveState, topic: str, payload: bytes) -> list[dict[str, Any]]:
        if broken.is_set():
            raise RuntimeError("forced failure inside the follower")
        return fold(self, topic, payload)

    monkeypatch.setattr(LiveState, "fold", failing_fold)
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            watch_console(page, browser_problems)
            await page.goto(f"http://{host}:{port}/")
            await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
            assert not await page.is_visible("#stale-banner")

            broken.set()  # the next message takes the follower down, and every restart with it
            await publish(settings, {"telemetry": telemetry(12.5)}, retain=False)
            await page.wait_for_selector("#stale-banner", state="visible", timeout=10_000)
            why = await page.text_content("#stale-why")
            assert why == "the dashboard's MQTT follower failed (RuntimeError); restarting it"

            broken.clear()  # the next restart gets the retained data again: fresh, not stale
            await page.wait_for_selector("#stale-banner", state="hidden", timeout=30_000)
            await publish(
                settings,
                {"components/brake_left": component("brake_left", "failed", failure="x")},
                retain=True,
            )
            await page.wait_for_selector("#part-brake_left.failed", timeout=10_000)
        finally:
            await browser.close()
    assert browser_problems == []


async def test_supervisor_restarts_a_follower_that_raises(broker: tuple[str, int]) -> None:
    """Without a browser: `supervise` runs the follower again after it raises, with backoff."""
    settings = service_settings(*broker, Path("/nonexistent"))
    state = LiveState(settings)
    stop = asyncio.Event()
    runs = 0

    async def follow(state: LiveState, stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError("follower down")
        await stop.wait()

    supervisor = asyncio.create_task(server.supervise(state, stop, follow))
    await wait_until(lambda: runs == 3)
    assert state.stale == "the dashboard's MQTT follower failed (OSError); restarting it"
    stop.set()
    await asyncio.wait_for(supervisor, 5)


# --- Only the dashboard's own page may command or listen ------------------------------------


async def test_cross_site_and_rebound_requests_are_refused_and_never_reach_the_car(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    body = {
        "command": "inject_fault",
        "body": {"component": "brake_left", "failure": "open_circuit"},
    }
    listening = server.Listening()
    async with (
        serving(settings, "127.0.0.1", 0, listening) as (host, port),
        running(service),
        subscribed(*broker, f"{root}/request/#") as requests,
        aiohttp.ClientSession() as http,
    ):
        await wait_until(lambda: service.publisher.connected)
        own = f"http://{host}:{port}"
        url = f"{own}/api/command"
        as_json = {"Content-Type": "application/json"}
        json_from = {**as_json, "Origin": own}
        refused_posts: list[tuple[str, dict[str, str], str]] = [
            ("evil origin", {**as_json, "Origin": "http://evil.example"}, "origin"),
            ("another port", {**as_json, "Origin": f"http://{host}:{port + 1}"}, "origin"),
            ("https origin", {**as_json, "Origin": f"https://{host}:{port}"}, "origin"),
            ("origin with a path", {**as_json, "Origin": f"{own}/x"}, "origin"),
            ("null origin", {**as_json, "Origin": "null"}, "origin"),
            ("rebound host", {**as_json, "Host": f"evil.example:{port}"}, "host"),
            ("rebound, own origin", {**json_from, "Host": f"evil.example:{port}"}, "host"),
            ("wrong port in host", {**as_json, "Host": f"{host}:{port + 1}"}, "host"),
            ("host without port", {**as_json, "Host": host}, "host"),
            ("empty host", {**as_json, "Host": ""}, "host"),
            ("cross-site fetch", {**json_from, "Sec-Fetch-Site": "cross-site"}, "sec-fetch-site"),
            ("same-site fetch", {**json_from, "Sec-Fetch-Site": "same-site"}, "sec-fetch-site"),
            ("text/plain (a form)", {"Content-Type": "text/plain", "Origin": own}, "content-type"),
            (
                "urlencoded form",
                {"Content-Type": "application/x-www-form-urlencoded"},
                "content-type",
            ),
            ("multipart form", {"Content-Type": "multipart/form-data; boundary=x"}, "content-type"),
        ]
        data = json.dumps(body).encode()
        for name, headers, reason in refused_posts:
            before = listening.refused[reason]
            async with http.post(url, data=data, headers=headers) as answer:
                assert answer.status == 403, name
                assert (await answer.json())["status"] == "error", name
            assert listening.refused[reason] == before + 1, name
        async with http.post(url, data=data, skip_auto_headers=["Content-Type"]) as answer:
            assert answer.status == 403, "no content type"
        for name, path, headers in [
            ("stream, evil origin", "/stream", {"Origin": "http://evil.example"}),
            ("stream, rebound host", "/stream", {"Host": f"evil.example:{port}"}),
            ("page, rebound host", "/", {"Host": f"evil.example:{port}"}),
            ("script, rebound host", "/app.js", {"Host": f"evil.example:{port}"}),
        ]:
            async with http.get(f"{own}{path}", headers=headers) as answer:
                assert answer.status == 403, name

        # The dashboard's own page, however it names loopback, is served; a command works.
        for alias in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST"):
            async with http.get(f"{own}/", headers={"Host": f"{alias}:{port}"}) as page:
                assert page.status == 200, alias
        headers = {**as_json, "Origin": own, "Sec-Fetch-Site": "same-origin"}
        async with http.post(url, data=data, headers=headers) as answer:
            assert answer.status == 200
            assert (await answer.json())["status"] == "ok"
        # The accepted command was published after every refused one: had any of those reached
        # MQTT, it would have arrived first. Exactly one request did.
        await requests.wait_for(lambda: requests.messages, 10.0, "the accepted request")
        assert [t for t, _, _ in requests.messages] == [f"{root}/request/inject_fault"]


async def test_security_headers(broker: tuple[str, int], tmp_path: Path) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    async with serving(settings, "127.0.0.1", 0) as (host, port), aiohttp.ClientSession() as http:
        for path, content_type in [
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
        ]:
            async with http.get(f"http://{host}:{port}{path}") as got:
                assert got.status == 200
                assert got.content_type == content_type
                policy = got.headers["Content-Security-Policy"]
                assert "script-src 'self'" in policy
                assert "frame-ancestors 'none'" in policy
                assert "require-trusted-types-for 'script'" in policy
                assert "unsafe-inline" not in policy
                assert got.headers["X-Content-Type-Options"] == "nosniff"
                assert got.headers["Referrer-Policy"] == "no-referrer"
        async with http.get(f"http://{host}:{port}/api/command") as refused:
            assert refused.status == 405  # a GET cannot command (and gets the headers too)
            assert refused.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(f"http://{host}:{port}/") as page:
            html = await page.text()
        # No inline script or style, no event handler attribute in the page.
        assert "<script>" not in html
        assert "<style>" not in html
        assert not re.search(r"\son[a-z]+\s*=", html)
        assert "style=" not in html


async def test_in_chromium_a_cross_site_page_and_a_rebound_name_cannot_command(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    """A page on another origin (evil.example, mapped to 127.0.0.1 inside Chromium) tries the
    classic CSRF moves; the same name pointed at the dashboard (DNS rebinding) gets nothing."""
    settings = service_settings(*broker, tmp_path / "state")
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    listening = server.Listening()
    async with serving(settings, "127.0.0.1", 0, listening) as (host, port):
        target = f"http://{host}:{port}/api/command"
        body = json.dumps({"command": "clear_faults", "body": {}})
        evil_pages = {
            # A "simple" request: no preflight, the browser sends it and hides the answer.
            "/fetch": f"""<script>
              fetch({json.dumps(target)}, {{method: "POST", mode: "no-cors",
                     headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(body)}}})
                .finally(() => {{ window.__done = true; }});
            </script>""",
            # JSON needs a preflight, which the dashboard does not grant: never sent.
            "/cors": f"""<script>
              fetch({json.dumps(target)}, {{method: "POST",
                     headers: {{"Content-Type": "application/json"}}, body: {json.dumps(body)}}})
                .catch(() => null).finally(() => {{ window.__done = true; }});
            </script>""",
            # The classic: a form posting JSON-looking text/plain.
            "/form": f"""<form method="post" enctype="text/plain" action={json.dumps(target)}>
              <input name='{{"command": "clear_faults", "body": {{}}, "x": "' value='"}}'>
              </form><script>document.forms[0].submit();</script>""",
        }

        async def evil(request: web.Request) -> web.Response:
            return web.Response(text=evil_pages[request.path], content_type="text/html")

        app = web.Application()
        for path in evil_pages:
            app.router.add_get(path, evil)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        evil_port = runner.addresses[0][1]
        try:
            async with (
                subscribed(*broker, f"{root}/request/#") as requests,
                playwright.async_playwright() as p,
            ):
                browser = await p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"],
                )
                try:
                    page = await browser.new_page()
                    evil_site = f"http://evil.example:{evil_port}"
                    await page.goto(f"{evil_site}/fetch")
                    await page.wait_for_function("window.__done === true")
                    assert listening.refused == {"origin": 1}
                    await page.goto(f"{evil_site}/cors")
                    await page.wait_for_function("window.__done === true")
                    assert listening.refused == {"origin": 1}  # the browser did not even ask
                    async with page.expect_response(target) as answer:
                        await page.goto(f"{evil_site}/form")
                    assert (await answer.value).status == 403
                    assert listening.refused == {"origin": 2}
                    # DNS rebinding: evil.example now points at the dashboard. Same origin for
                    # the browser, but the dashboard does not answer to that name.
                    rebound = await page.goto(f"http://evil.example:{port}/")
                    assert rebound is not None
                    assert rebound.status == 403
                    stream = await page.evaluate("fetch('/stream').then(r => r.status)")
                    assert stream == 403
                    command = await page.evaluate(
                        """fetch('/api/command', {method: 'POST',
                             headers: {'Content-Type': 'application/json'},
                             body: '{"command": "clear_faults", "body": {}}'})
                           .then(r => r.status)"""
                    )
                    assert command == 403
                    assert listening.refused["host"] >= 3  # the page, the stream, the command
                    assert listening.refused["origin"] == 2
                finally:
                    await browser.close()
                # A barrier: a request sent now arrives after any that the attacks had caused.
                await publish(settings, {"request/barrier": b"{}"}, retain=False)
                await requests.wait_for(lambda: requests.messages, 10.0, "the barrier")
                assert [t for t, _, _ in requests.messages] == [f"{root}/request/barrier"]
        finally:
            await runner.cleanup()


MACHINE = socket.gethostname()


@pytest.mark.parametrize(
    ("bound", "sockets", "accepted", "refused"),
    [
        (
            "127.0.0.1",
            [("127.0.0.1", 8080)],
            ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LocalHost:8080"],
            ["evil.example:8080", "127.0.0.1:8081", "127.0.0.1", "127.0.0.2:8080", "[::1]"],
        ),
        (
            "localhost",
            [("127.0.0.1", 8080), ("::1", 8080, 0, 0)],
            ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"],
            ["localhost.:8080", "localhost.evil.example:8080", "::1:8080"],
        ),
        (
            "0.0.0.0",
            [("0.0.0.0", 8080)],
            [
                "192.168.1.5:8080",
                "[fe80::1]:8080",
                "localhost:8080",
                f"{MACHINE}:8080",
            ],
            ["evil.example:8080", "192.168.1.5:8081", "192.168.1.5:8080:1", ":8080", ""],
        ),
        (
            "192.168.1.5",
            [("192.168.1.5", 8080)],
            ["192.168.1.5:8080", f"{MACHINE}.local:8080"],
            ["evil.example:8080", "10.0.0.1:8080", "[::1]x:8080", "192.168.1.5:http"],
        ),
    ],
)
def test_which_hosts_the_dashboard_answers_to(
    bound: str, sockets: list[tuple[Any, ...]], accepted: list[str], refused: list[str]
) -> None:
    address = server.Address.bound(bound, sockets, 8080)
    for host in accepted:
        assert address.accepts(host), host
    for host in refused:
        assert not address.accepts(host), host
    host = accepted[0]
    assert address.same_origin(f"http://{host}", host)
    assert not address.same_origin("http://evil.example:8080", host)
    assert not address.same_origin(f"https://{host}", host)
