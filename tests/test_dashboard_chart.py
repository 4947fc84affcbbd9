"""The dashboard's chart of the last minutes and its drawing of the car, in Debian's Chromium: the
chart (uPlot, shipped in the package) gets its points from published telemetry and shows a
cranking dip, a page opened later gets the history, nothing breaks the page's CSP; every label of
the drawing stays inside it, fuses and ground points included. The screenshot is kept at
build/screenshots/dashboard-chart.png."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carlightd.config import Settings
from carlightd.consumers.dashboard import server
from carlightd.consumers.dashboard.server import (
    HISTORY_POINTS,
    HISTORY_S,
    LiveState,
    chart_point,
    serving,
)
from carlightd.contract.payloads import ComponentPayload, TelemetryPayload
from tests.conftest import service_settings
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, playwright
from tests.test_dashboard_security import publish, watch_console

expect = playwright.expect

SCREENSHOT = Path(__file__).parents[1] / "build" / "screenshots" / "dashboard-chart.png"
START = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
DIP_AT = 20  # the point (of 41, 5 s apart) where the engine cranks
# Any CSP violation, even one only reported, is kept by the page for the test to read.
CSP_WATCH = """document.addEventListener("securitypolicyviolation",
  e => (window.__csp = window.__csp || []).push(e.violatedDirective + " " + e.blockedURI));"""


def telemetry(at: datetime, bus_v: float | None, current_a: Any, temperature_c: Any) -> bytes:
    battery = {"voltage_v": bus_v, "current_a": current_a, "temperature_c": temperature_c}
    return TelemetryPayload(
        vehicle="demo-car",
        at=at,
        ignition="run",
        engine_rpm=800,
        bus_v=bus_v,
        battery=battery,
        alternator=None,
    ).encode()


def drive(i: int) -> tuple[float, float, float]:
    """Bus V, battery A, battery °C of point i: parked, a crank, then charging."""
    if i < DIP_AT:
        return 12.45, 3.0, 5.0
    if i == DIP_AT:
        return 9.4, 310.0, 5.0
    return 14.3, -25.0 + i * 0.5, 5.0 + (i - DIP_AT) * 0.1


def test_chart_points_are_numbers_or_gaps_and_keep_the_window() -> None:
    at = START
    hostile = {"bus_v": True, "battery": {"current_a": "12", "temperature_c": math.nan}}
    assert chart_point(hostile, at) == [at.timestamp(), None, None, None, None]
    assert chart_point({"bus_v": 12, "battery": [1, 2]}, at)[1:3] == [12.0, None]
    charging = {"bus_v": 14.1, "temperature_c": -7.5, "setpoint_v": 14.6, "battery": {}}
    assert chart_point(charging, at) == [at.timestamp(), 14.1, None, -7.5, 14.6]
    from_battery = {"temperature_c": None, "battery": {"current_a": -3, "temperature_c": 21.0}}
    assert chart_point(from_battery, at)[2:] == [-3.0, 21.0, None]
    naive = chart_point({}, at.replace(tzinfo=None))
    assert naive[0] == at.timestamp()  # a time without a zone is UTC

    state = LiveState(service_settings("127.0.0.1", 1883, Path("/nonexistent")))
    for i in range(100):
        state.remember([at.timestamp() + 10 * i, 12.0, None, None, None])
    kept = [p[0] for p in state.history if p[0] is not None]
    assert kept[-1] - kept[0] == HISTORY_S
    assert len(kept) == 31
    state.remember([at.timestamp(), 11.0, None, None, None])  # older: a new run, start over
    assert list(state.history) == [[at.timestamp(), 11.0, None, None, None]]
    for i in range(5 * HISTORY_POINTS):  # a flood, a millisecond apart: the newest are kept
        state.remember([at.timestamp() + i / 1000, 12.0, None, None, None])
    assert len(state.history) == HISTORY_POINTS
    assert state.history[-1][0] == at.timestamp() + (5 * HISTORY_POINTS - 1) / 1000


pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


async def line_extent(page: Any, chart: str, colour: tuple[int, int, int]) -> dict[str, int]:
    """Where the series of `colour` is drawn on a chart's canvas, found in its pixels, in canvas
    rows from the top: per column its highest and lowest pixel; their medians (the line's usual
    height), the highest and lowest of all, and the canvas's height."""
    extent: dict[str, int] = await page.evaluate(
        """([chart, colour]) => {
          const canvas = document.querySelector(`#${chart} canvas`);
          const { width, height } = canvas;
          const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
          const tops = [], bottoms = [];
          for (let x = 0; x < canvas.width; x++) {
            let top = null, bottom = null;
            for (let y = 0; y < canvas.height; y++) {
              const i = (y * canvas.width + x) * 4;
              const near = [0, 1, 2].every(c => Math.abs(pixels[i + c] - colour[c]) < 40);
              if (near && pixels[i + 3] > 150) { if (top === null) top = y; bottom = y; }
            }
            if (top !== null) { tops.push(top); bottoms.push(bottom); }
          }
          const median = list => list.slice().sort((a, b) => a - b)[Math.floor(list.length / 2)];
          return { usual: median(bottoms), lowest: Math.max(...bottoms),
                   highest: Math.min(...tops), height: canvas.height, columns: tops.length };
        }""",
        [chart, list(colour)],
    )
    return extent


async def test_chart_plots_published_telemetry_with_the_crank_dip_under_the_csp(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    problems: list[str] = []
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        url = f"http://{host}:{port}/"
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1400})
            await page.add_init_script(CSP_WATCH)
            watch_console(page, problems)
            await page.goto(url)
            await expect(page.locator("#vehicle")).to_have_text("demo-car", timeout=10_000)
            await expect(page.locator("#chart-bus canvas")).to_have_count(1)
            await expect(page.locator("#chart-bus")).to_have_attribute("data-points", "0")

            for i in range(41):
                bus_v, current_a, temperature_c = drive(i)
                at = START + timedelta(seconds=5 * i)
                message = telemetry(at, bus_v, current_a, temperature_c)
                await publish(settings, {"telemetry": message}, retain=False)
            bus = page.locator("#chart-bus")
            await expect(bus).to_have_attribute("data-points", "41", timeout=15_000)
            await expect(bus).to_have_attribute("data-min", "9.4")
            await expect(bus).to_have_attribute("data-max", "14.3")
            current = page.locator("#chart-current")
            await expect(current).to_have_attribute("data-max", "310")
            await expect(current).to_have_attribute("data-min", "-14.5")
            await expect(page.locator("#chart-temperature")).to_have_attribute("data-min", "5")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            # The dip is drawn: the bus line's lowest pixel is far below its usual height.
            line = await line_extent(page, "chart-bus", (0x58, 0xA6, 0xFF))
            assert line["columns"] > 300, line  # a line across the chart
            assert line["lowest"] - line["usual"] > line["height"] / 5, line
            # And the crank's current is a spike far above everything else.
            line = await line_extent(page, "chart-current", (0xE3, 0xB3, 0x41))
            assert line["usual"] - line["highest"] > line["height"] / 5, line

            # A page opened now gets the last minutes from the server at once.
            late = await browser.new_page(viewport={"width": 1280, "height": 1400})
            await late.add_init_script(CSP_WATCH)
            watch_console(late, problems)
            await late.goto(url)
            await expect(late.locator("#chart-bus")).to_have_attribute(
                "data-points", "41", timeout=10_000
            )
            await expect(late.locator("#chart-bus")).to_have_attribute("data-min", "9.4")

            # Five minutes later the crank has left the window, on both pages.
            at = START + timedelta(seconds=5 * DIP_AT + HISTORY_S + 1)  # keeps points 21 to 40
            await publish(settings, {"telemetry": telemetry(at, 14.1, -5.0, 9.0)}, retain=False)
            for shown in (page, late):
                chart = shown.locator("#chart-bus")
                await expect(chart).to_have_attribute("data-min", "14.1", timeout=10_000)
                await expect(chart).to_have_attribute("data-points", "21")
            for shown in (page, late):
                assert await shown.evaluate("window.__csp || []") == []
            scripts = await page.evaluate("[...document.scripts].map(s => s.src)")
            assert scripts == [f"{url}{script}" for script in server.SCRIPTS]
        finally:
            await browser.close()
    assert problems == []


# Drawn by kind: the page draws these whether or not the car's configuration has them yet.
FUSES_AND_GROUNDS: list[dict[str, Any]] = [
    {"id": "fuse_f12_headlamp_left", "kind": "fuse", "feeds": ["headlamp_left", "tail_left"]},
    {"id": "fuse_f13_headlamp_right", "kind": "fuse", "feeds": ["headlamp_right"]},
    {"id": "fuse_f21_rear_lamps", "kind": "fuse", "feeds": ["brake_left", "brake_right"]},
    {"id": "ground_g1_front_left", "kind": "ground", "serves": ["headlamp_left"]},
    {"id": "ground_g2_rear", "kind": "ground", "serves": ["brake_left", "tail_left"]},
    {"id": "x_unknown_kind_part", "kind": "relay", "feeds": None},  # no drawing: the generic box
]
FUSE_FAILURES = {"fuse": ["blown"], "ground": ["high_resistance"], "relay": ["stuck_open"]}


class WithFusesAndGrounds(LiveState):
    """The dashboard's state with fuses, grounds and a part of an unknown kind added (those the
    car's configuration lacks), so the drawing of every kind is checked whatever the car has."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.extra = [p for p in FUSES_AND_GROUNDS if p["kind"] not in self.kinds()]
        self.parts |= {p["id"] for p in self.extra}

    def kinds(self) -> set[str]:
        return {str(c.kind) for c in self.settings.components}

    def snapshot(self) -> dict[str, Any]:
        snapshot = super().snapshot()
        extra = [{**p, "function": None, "failures": FUSE_FAILURES[p["kind"]]} for p in self.extra]
        snapshot["parts"] = [*snapshot["parts"], *extra]
        return snapshot


def failing(part: dict[str, Any], failure: str) -> bytes:
    return ComponentPayload(
        component=part["id"],
        kind=part["kind"],
        status="failed",
        failure=failure,
        dtc="B1A00",
        dtc_status=0x2F,
        reason=None,
        reading=None,
        updated_at=START,
    ).encode()


async def outside_labels(page: Any) -> list[str]:
    """Every label of the drawing shown outside the drawing, with its box and the drawing's."""
    found: list[str] = await page.evaluate(
        """() => {
          const svg = document.getElementById("car").getBoundingClientRect();
          const out = [];
          for (const text of document.querySelectorAll("#parts text")) {
            const box = text.getBoundingClientRect();
            if (!text.textContent || getComputedStyle(text).display === "none") continue;
            if (box.width === 0) out.push(`${text.textContent}: not laid out`);
            else if (box.left < svg.left || box.right > svg.right || box.top < svg.top
                     || box.bottom > svg.bottom)
              out.push(`${text.textContent}: ${box.left}..${box.right} x ${box.top}..${box.bottom}`
                       + ` outside ${svg.left}..${svg.right} x ${svg.top}..${svg.bottom}`);
          }
          return out;
        }"""
    )
    return found


async def overlapping_labels(page: Any) -> list[str]:
    """Every pair of failure labels shown that cover each other."""
    found: list[str] = await page.evaluate(
        """() => {
          const shown = [...document.querySelectorAll("#parts text.failure")]
            .filter(t => t.textContent && getComputedStyle(t).display !== "none");
          const out = [];
          for (const [i, a] of shown.entries()) for (const b of shown.slice(i + 1)) {
            const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
            if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom)
              out.push(`${a.textContent} over ${b.textContent}`);
          }
          return out;
        }"""
    )
    return found


async def test_every_failure_label_stays_inside_the_drawing(
    broker: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    monkeypatch.setattr(server, "LiveState", WithFusesAndGrounds)
    problems: list[str] = []
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1400})
            await page.add_init_script(CSP_WATCH)
            watch_console(page, problems)
            await page.goto(f"http://{host}:{port}/")
            await expect(page.locator("#vehicle")).to_have_text("demo-car", timeout=10_000)
            parts: list[dict[str, Any]] = await page.evaluate("state.parts")
            kinds = {part["kind"] for part in parts}
            assert {"fuse", "ground", "relay"} <= kinds
            for kind, drawn in [("fuse", "fuse"), ("ground", "ground"), ("relay", "generic")]:
                shapes = page.locator(f"#parts g[data-kind='{kind}'][data-drawn='{drawn}']")
                assert await shapes.count() == sum(part["kind"] == kind for part in parts)
            # Nothing failing yet: the names drawn are inside.
            assert await outside_labels(page) == []

            # Every part failing with its longest failure name, then with a 100-character one.
            for long in (False, True):
                messages = {}
                for part in parts:
                    failure = max(part["failures"], key=len)
                    failure = failure + "_" + "x" * 100 if long else failure
                    messages[f"components/{part['id']}"] = failing(part, failure)
                await publish(settings, messages, retain=False)
                await expect(page.locator("#parts g.failed")).to_have_count(
                    len(parts), timeout=15_000
                )
                await expect(page.locator("#parts text.failure").last).to_contain_text(
                    "…" if long else "B1A00"
                )
                assert await outside_labels(page) == [], long
                assert await overlapping_labels(page) == [], long
                headlamp = await page.text_content("#part-headlamp_left text.failure")
                if not long:  # the label cut off before this fix: whole now
                    assert headlamp == "headlamp_left: short_circuit B1A00"
                else:
                    assert headlamp
                    assert headlamp.startswith("headlamp_left: short_circuit_xxx")
                    assert headlamp.endswith("…")
                if not long:
                    await page.screenshot(path=str(SCREENSHOT.with_name("dashboard-labels.png")))
            for part in parts:  # a fuse's and a ground's tooltip say what is behind them
                behind: list[str] = part.get("feeds") or part.get("serves") or []
                if part["kind"] in ("fuse", "ground"):
                    assert behind, part
                    title = await page.text_content(f"#part-{part['id']} title")
                    assert title
                    assert ", ".join(behind) in title
            assert await page.evaluate("window.__csp || []") == []
        finally:
            await browser.close()
    assert problems == []
