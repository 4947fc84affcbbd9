"""The web dashboard end to end in headless Chromium (Debian's, driven by Playwright): a fault
injected over MQTT shows on the drawing of the car, a button repairs it, an offline daemon shows.
The screenshot is kept at build/screenshots/dashboard.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest

from carlightd.app.daemon import Service
from carlightd.consumers.client import send_command
from carlightd.consumers.dashboard.server import serving
from tests.conftest import running, service_settings, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).parents[1] / "build" / "screenshots" / "dashboard.png"
playwright = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)
# As the machine's notes say: without these, Chromium keeps reaching for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_dashboard_shows_faults_live_repairs_and_goes_offline(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        url = f"http://{host}:{port}/"
        async with aiohttp.ClientSession() as http, http.get(url) as got:
            page_html = await got.text()
        assert "http://" not in page_html.replace("http://www.w3.org/2000/svg", "")  # no CDN
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            async with running(service):
                await wait_until(lambda: service.publisher.connected)
                await page.goto(url)
                await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
                await page.wait_for_selector("#availability.online")

                response = await send_command(
                    settings, "inject_fault", {"component": "brake_left", "failure": "open_circuit"}
                )
                assert response.status == "ok"
                await page.wait_for_selector("#part-brake_left.failed", timeout=10_000)
                label = await page.text_content("#part-brake_left text.failure")
                assert label == "brake_left: open_circuit B1200"
                await page.wait_for_selector("#telltale-bulb.lit")
                assert "B1200" in (await page.text_content("#faults") or "")
                assert "fault_confirmed" in (await page.text_content("#events") or "")
                await page.wait_for_timeout(500)  # let the colour transition finish
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT), full_page=True)

                # The workshop button sends a repair request through the dashboard.
                await page.click("button.repair[data-part='brake_left']")
                await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
                await page.wait_for_selector("#telltale-bulb:not(.lit)")
            # The daemon stopped cleanly: it said offline, and the page says so.
            await page.wait_for_selector("body.offline", timeout=10_000)
            assert await page.text_content("#availability") == "offline"
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


async def test_dashboard_refuses_what_is_not_a_command(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    async with serving(settings, "127.0.0.1", 0) as (host, port), aiohttp.ClientSession() as http:
        url = f"http://{host}:{port}/api/command"
        async with http.post(url, json={"command": "self_destruct", "body": {}}) as refused:
            assert refused.status == 400
            assert (await refused.json())["error"] == "unknown command"
        not_json = {"Content-Type": "application/json"}
        async with http.post(url, data=b"not json", headers=not_json) as refused:
            assert refused.status == 400
