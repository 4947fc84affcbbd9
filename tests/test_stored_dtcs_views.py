"""Stored DTCs through the whole chain, from a real daemon over a real broker: a fault injected,
confirmed, repaired and healed leaves its DTC in `ROOT/dtcs`, and the dashboard (in Debian's
Chromium) and `carlightd watch` (plain lines) show it apart from the active faults."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest

from carlightd.app.daemon import Service
from carlightd.config import Settings
from carlightd.consumers.client import send_command, watch
from carlightd.consumers.dashboard.server import serving
from tests.brokers import subscribed
from tests.conftest import running, service_settings, wait_until
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, playwright

expect = playwright.expect


# A stored DTC of brake_left's open circuit, confirmed once, no longer failing (testFailed clear):
# e.g. "  B1200 0x2e confirmed, pending brake_left open_circuit occurrences 1 aging 0 last …".
STORED_LINE = re.compile(
    r"^  B1200 0x[0-9a-f][02468ace] confirmed[a-z, ]* brake_left open_circuit occurrences 1 ",
    re.MULTILINE,
)


async def break_brake_lamp(settings: Settings) -> None:
    response = await send_command(
        settings, "inject_fault", {"component": "brake_left", "failure": "open_circuit"}
    )
    assert response.status == "ok"


async def repair_brake_lamp(settings: Settings) -> None:
    response = await send_command(settings, "repair", {"component": "brake_left"})
    assert response.status == "ok"


async def test_a_healed_fault_stays_stored_in_root_dtcs(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        faults, dtcs = f"{root}/faults", f"{root}/dtcs"
        await sub.wait_for(lambda: sub.json_on(dtcs), what="the empty memory")
        assert sub.json_on(dtcs)[-1]["dtcs"] == []
        await break_brake_lamp(settings)
        await sub.wait_for(
            lambda: any(f["warning_lamps"]["bulb"] for f in sub.json_on(faults)), what="confirmed"
        )
        confirmed = [f for f in sub.json_on(faults) if f["faults"]][-1]["faults"][0]
        assert confirmed["occurrences"] == 1
        frame = confirmed["freeze_frame"]
        assert frame is not None
        assert frame["ignition"] == "run"
        await repair_brake_lamp(settings)
        healed = await sub.wait_for(
            lambda: (f := sub.json_on(faults)[-1])["faults"] == [] and f, what="healed"
        )
        # The memory of the same cycle (the same report): the DTC is still there.
        memory = await sub.wait_for(
            lambda: next(
                (d for d in sub.json_on(dtcs) if d["updated_at"] == healed["updated_at"]), None
            ),
            what="the memory when the fault healed",
        )
        [stored] = memory["dtcs"]
        assert not stored["dtc_status"] & 0x01  # testFailed: no longer failing
        assert not stored["dtc_status"] & 0x80  # no warning lamp requested
        assert stored["component"] == "brake_left"
        assert stored["dtc"] == "B1200"
        assert stored["dtc_status"] & 0x08  # confirmedDTC, kept after healing
        assert stored["dtc_status"] & 0x20  # testFailedSinceLastClear
        assert stored["occurrences"] == 1
        assert stored["freeze_frame"] == frame  # taken at confirmation, the same one
        assert stored["first_failed"] <= stored["last_failed"] <= healed["updated_at"]
        # Unchanged memory is not republished every cycle.
        count = len(sub.on(dtcs))
        cycles = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 10)
        assert len(sub.on(dtcs)) == count


async def test_plain_watch_shows_the_stored_dtc_after_the_fault_healed(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    out = io.StringIO()
    warnings: list[str] = []

    def healed_and_stored() -> bool:
        text = out.getvalue()
        # The fault was listed, then the list said none, and the memory still holds its DTC.
        broke = text.find("faults: brake_left:open_circuit")
        healed = text.find("faults: none", broke)
        return broke >= 0 and healed >= 0 and STORED_LINE.search(text, healed) is not None

    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        watcher = asyncio.create_task(
            watch(settings, out, until=healed_and_stored, warn=warnings.append)
        )
        await wait_until(lambda: "stored DTCs: none" in out.getvalue())
        await break_brake_lamp(settings)
        await wait_until(lambda: " fault_confirmed  brake_left " in out.getvalue())
        await repair_brake_lamp(settings)
        try:
            async with asyncio.timeout(20):
                await watcher
        except TimeoutError:
            raise AssertionError(f"watch never showed it:\n{out.getvalue()}") from None
    text = out.getvalue()
    assert re.search(r"occurrences 1 aging 0 last \S+ \[run ", text)  # the freeze frame
    assert warnings == []


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)
async def test_the_dashboard_shows_the_stored_dtc_after_the_fault_healed(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    async with (
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1200})
            async with running(service):
                await wait_until(lambda: service.publisher.connected)
                await page.goto(f"http://{host}:{port}/")
                await expect(page.locator("#dtcs")).to_have_text("none stored", timeout=10_000)
                await break_brake_lamp(settings)
                await page.wait_for_selector("#part-brake_left.failed", timeout=10_000)
                await expect(page.locator("#dtcs tr[data-dtc='B1200']")).to_have_count(1)
                # The workshop's repair button: the fault heals, its DTC stays stored.
                await page.click("button.repair[data-part='brake_left']")
                await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
                await expect(page.locator("#faults")).to_have_text("no faults")
                row = page.locator("#dtcs tr[data-dtc='B1200']")
                # testFailed (0x01) clear: "failing" is no longer said.
                status = row.locator("td").nth(1)
                await expect(status).not_to_contain_text("failing")
                cells = await row.locator("td").all_text_contents()
                assert re.fullmatch(r"0x[0-9a-f]{2} confirmed(, pending)?", cells[1])
                assert cells[0] == "B1200"
                assert cells[2:6] == ["brake_left", "open_circuit", "1", "0"]
                assert cells[6].startswith("run ")
                assert " rpm " in cells[6]
                assert "°C at " in cells[6]
                shot = Path(__file__).parents[1] / "build" / "screenshots" / "dashboard-dtcs.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
