"""The views read the kinds of part from what they receive: a kind they have no drawing for (one
added since, say a relay) is shown generically, never dropped, hidden or piled onto another part."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from carlightd.consumers.dashboard.server import serving
from carlightd.consumers.terminal import WatchState, render
from tests.conftest import service_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = "carlightd/demo-car"
RELAY = {
    "component": "relay_main",
    "kind": "relay",
    "status": "failed",
    "failure": "stuck_open",
    "dtc": "B1299",
    "dtc_status": 9,
    "reason": "no voltage behind the relay",
    "reading": {"stuck_open": True, "drop_mv": 412.0, "load_a": 0.0},
    "updated_at": "2025-01-01T00:00:00Z",
}


def screen(state: WatchState) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(state))
    return out.getvalue()


def test_the_terminal_shows_a_part_of_an_unknown_kind_with_its_first_numbers() -> None:
    state = WatchState(ROOT)
    state.fold(f"{ROOT}/components/relay_main", json.dumps(RELAY).encode())
    row = next(line for line in screen(state).splitlines() if "relay_main" in line)
    assert "relay" in row.replace("relay_main", "")
    assert "failed" in row
    assert "stuck_open" in row
    assert "B1299" in row
    assert "drop_mv 412.00, load_a 0.00" in row  # its reading, named as received


def test_the_terminal_still_prefers_the_known_electrical_values() -> None:
    state = WatchState(ROOT)
    lamp = {**RELAY, "component": "brake_left", "kind": "lamp", "reading": None}
    lamp.update(status="ok", failure=None, dtc=None, dtc_status=None)
    lamp["reading"] = {"commanded_on": True, "pulsed": False, "supply_v": 12.5, "current_a": 1.6}
    state.fold(f"{ROOT}/components/brake_left", json.dumps(lamp).encode())
    row = next(line for line in screen(state).splitlines() if "brake_left" in line)
    assert "current 1.60 A, supply 12.50 V" in row


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


# A snapshot as the server would send it for a car with parts the page has no drawing for: two
# relays and a second controller (the first keeps its own box).
EXTRA_PARTS = """
    const extra = [
      { id: "relay_main", kind: "relay", function: null, failures: ["stuck_open"] },
      { id: "relay_lamps", kind: "relay", function: null, failures: ["stuck_open"] },
      { id: "bcm_rear", kind: "controller", function: null, failures: ["no_response"] },
    ];
    take(Object.assign({}, state, { type: "snapshot", parts: state.parts.concat(extra) }));
    render();
"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
async def test_the_dashboard_draws_an_unknown_kind_generically(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    settings = service_settings(*broker, tmp_path / "state")
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://{host}:{port}/")
            await page.wait_for_selector("#part-brake_left")
            await page.wait_for_selector("#part-bcm")
            before = await page.locator("#part-bcm rect").bounding_box()
            await page.evaluate(EXTRA_PARTS)

            car = await page.locator("#car").bounding_box()
            shapes: dict[str, dict[str, Any]] = {}
            for g in await page.locator("#parts > g").all():
                part = await g.get_attribute("data-part")
                box = await g.locator("rect, circle").bounding_box()
                assert part is not None
                assert box is not None
                shapes[part] = dict(box)
            assert len(shapes) == len(settings.components) + 3  # every part is drawn
            for part in ("relay_main", "relay_lamps", "bcm_rear"):
                # On the drawing, clear of every other part …
                assert car is not None
                box = shapes[part]
                assert car["x"] <= box["x"]
                assert box["x"] + box["width"] <= car["x"] + car["width"]
                assert car["y"] <= box["y"]
                assert box["y"] + box["height"] <= car["y"] + car["height"]
                others = [other for other in shapes if other != part]
                assert not [o for o in others if _overlap(box, shapes[o])], part
                # … as a box named by its id.
                g = page.locator(f"#part-{part}")
                assert await g.get_attribute("data-drawn") == "generic"
                assert await g.locator("rect").count() == 1
                assert await g.locator("text.name").text_content() == part
            # The first controller keeps its own box; a known kind is not drawn generically.
            assert await page.locator("#part-bcm").get_attribute("data-drawn") != "generic"
            assert await page.locator("#part-bcm rect").bounding_box() == before
            assert await page.locator("[data-drawn='generic']").count() == 3

            # Its state is shown like any part's: status colour, failure and DTC on the drawing.
            update = json.dumps(
                {"type": "update", "topic": "components/relay_main", "value": RELAY}
            )
            await page.evaluate(f"take({update}); render();")
            await page.wait_for_selector("#part-relay_main.failed")
            label = await page.text_content("#part-relay_main text.failure")
            assert label == "relay_main: stuck_open B1299"
            # The workshop offers its failures, read from the snapshot, not from a list of kinds.
            options = page.locator("#workshop-rows tr", has_text="relay_main").locator("option")
            assert "stuck_open" in await options.all_text_contents()
        finally:
            await browser.close()
