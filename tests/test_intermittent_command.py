"""`inject_fault` with `"intermittent": p` (DESIGN §5): the request model takes 0 < p < 1 and
refuses anything else naming the field; the response echoes it; `carlightd inject PART FAILURE
--intermittent P` as a real process against a real daemon breaks the part in some cycles and not
in others; the dashboard's break control offers it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from carlightd import cli
from carlightd.app.daemon import Service
from carlightd.consumers.dashboard.server import LiveState, serving
from carlightd.contract.commands import COMMANDS, Cli, Command, InjectFault, Option, Repair
from carlightd.core.domain import Ignition
from carlightd.outputs.mqtt.commands import CommandError, CommandHandler, parse_request
from tests.conftest import running, service_settings, wait_until
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, playwright
from tests.test_mqtt_contract import request

# What JSON can carry that is not a presence (NaN cannot be carried: see below).
BAD_JSON = ["0", "1", "-1", "0.0", "1.0", "1.5", '"x"', '"0.5"', "1e999", "-1e999", "true", "[]"]
BAD_TEXT = ["0", "1", "-1", "x", "1e999", "nan", "NaN", "inf", "-inf", "", "0,5"]


def body(intermittent: str) -> bytes:
    text = (
        f'{{"component": "brake_left", "failure": "open_circuit", "intermittent": {intermittent}}}'
    )
    return text.encode()


@pytest.mark.parametrize("bad", BAD_JSON)
def test_a_presence_that_is_not_strictly_between_0_and_1_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_request("inject_fault", body(bad))
    assert refused.value.message.startswith("intermittent: "), refused.value.message


def test_nan_is_refused_by_the_model_too_and_is_no_json_at_all() -> None:
    for value in (float("nan"), float("inf"), 0, 1):
        with pytest.raises(ValidationError) as refused:
            InjectFault.model_validate({"component": "a", "failure": "b", "intermittent": value})
        assert refused.value.errors()[0]["loc"] == ("intermittent",)
    # JSON has no NaN: the reader refuses it before any field is looked at.
    with pytest.raises(CommandError, match="NaN is not a JSON value"):
        parse_request("inject_fault", body("NaN"))


def test_a_presence_is_taken_and_left_out_means_standing() -> None:
    assert parse_request("inject_fault", body("0.25")) == InjectFault(
        component="brake_left", failure="open_circuit", intermittent=0.25
    )
    standing = parse_request("inject_fault", b'{"component": "a", "failure": "b"}')
    assert isinstance(standing, InjectFault)
    assert standing.intermittent is None


class Workshop:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        self.calls.append((part_id, failure, intermittent))

    def repair(self, part_id: str) -> None:
        raise AssertionError("not asked")

    def set_ignition(self, ignition: Ignition) -> None:
        raise AssertionError("not asked")

    async def clear_faults(self) -> int:
        raise AssertionError("not asked")


async def test_the_handler_passes_the_presence_on_and_echoes_it() -> None:
    workshop = Workshop()
    handler = CommandHandler(workshop, enabled=True)
    response = await handler.handle("inject_fault", body("0.5"))
    assert response.status == "ok"
    assert response.data == {
        "component": "brake_left",
        "failure": "open_circuit",
        "intermittent": 0.5,
    }
    standing = await handler.handle("inject_fault", b'{"component": "a", "failure": "b"}')
    assert standing.status == "ok"
    assert standing.data == {"component": "a", "failure": "b"}  # nothing echoed that was not sent
    assert workshop.calls == [("brake_left", "open_circuit", 0.5), ("a", "b", None)]


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_the_cli_refuses_a_bad_presence_before_sending_naming_it(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        # `=`: "-inf" given apart would be taken for an option of its own
        cli._parser().parse_args(["inject", "brake_left", "open_circuit", f"--intermittent={bad}"])
    assert exited.value.code == 2
    assert "argument --intermittent: intermittent: must be a number strictly between 0 and 1" in (
        capsys.readouterr().err
    )


def test_the_cli_takes_a_presence_into_the_request() -> None:
    args = cli._parser().parse_args(
        ["inject", "brake_left", "open_circuit", "--intermittent", "0.3"]
    )
    assert args.intermittent == 0.3
    assert cli._parser().parse_args(["inject", "brake_left", "open_circuit"]).intermittent is None


async def _nothing(workshop: object, request: object) -> dict[str, object]:
    return {}


@pytest.mark.parametrize(("model", "field"), [(Repair, "intermittent"), (InjectFault, "failure")])
def test_an_option_must_fill_an_optional_field_of_its_model(
    model: type[Repair] | type[InjectFault], field: str
) -> None:
    option = Option("--x", field, "X", "h", float)
    with pytest.raises(TypeError, match=f"option '--x' fills '{field}', which is not an optional"):
        Command("broken", model, _nothing, "d", "b", Cli("broken", "h"), (), (option,))


def carlightd(settings_env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a separate process, against the test's broker and daemon."""
    return subprocess.run(
        [sys.executable, "-m", "carlightd", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **settings_env},
        check=False,
    )


async def test_the_cli_breaks_a_part_of_a_real_daemon_in_some_cycles_only(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = Service(service_settings(*broker, tmp_path / "state"))
    env = {
        "CARLIGHTD_MQTT__HOST": broker[0],
        "CARLIGHTD_MQTT__PORT": str(broker[1]),
        "CARLIGHTD_MQTT__BASE_TOPIC": service.settings.mqtt.base_topic,
    }
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        car = service.daemon.car
        for bad in ("0", "1", "-1", "x", "1e999", "nan"):  # refused before anything is sent
            done = await asyncio.to_thread(
                carlightd, env, "inject", "brake_left", "open_circuit", "--intermittent", bad
            )
            assert done.returncode == 2, done
            assert "--intermittent: intermittent: must be" in done.stderr
        for bad in BAD_JSON:  # and by the daemon, sent past the CLI
            refused = await request(*broker, root, "inject_fault", body(bad))
            assert refused["status"] == "error"
            assert refused["error"].startswith("intermittent: "), refused
        assert car.failures() == {}

        done = await asyncio.to_thread(
            carlightd, env, "inject", "brake_left", "open_circuit", "--intermittent", "0.5"
        )
        assert done.returncode == 0, done.stderr
        (line,) = [x for x in done.stdout.splitlines() if x.startswith("inject_fault: ok ")]
        assert json.loads(line.removeprefix("inject_fault: ok ")) == {
            "component": "brake_left",
            "failure": "open_circuit",
            "intermittent": 0.5,
        }
        assert car.failures() == {"brake_left": {"open_circuit"}}

        # Watched cycle by cycle, it is there in some and not in others.
        seen: dict[bool, int] = {True: 0, False: 0}
        last = car.time_s

        def watch() -> bool:
            nonlocal last
            if car.time_s != last:
                last = car.time_s
                seen["open_circuit" in car.present().get("brake_left", frozenset())] += 1
            return seen[True] >= 5 and seen[False] >= 5

        await wait_until(watch, timeout_s=60)

        done = await asyncio.to_thread(carlightd, env, "repair", "brake_left")
        assert done.returncode == 0, done.stderr
        assert car.failures() == {}


def test_the_dashboard_is_told_of_the_option(tmp_path: Path) -> None:
    forms = LiveState(service_settings("127.0.0.1", 1883, tmp_path)).snapshot()["workshop"]
    options = {form["name"]: form["options"] for form in forms}
    assert options == {
        name: [{"field": o.field, "label": o.field, "help": o.help} for o in command.options]
        for name, command in COMMANDS.items()
    }
    assert [o["field"] for o in options["inject_fault"]] == ["intermittent"]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)
async def test_the_dashboards_break_control_sends_an_intermittent_failure(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    async with (
        running(service),
        serving(settings, "127.0.0.1", 0) as (host, port),
        playwright.async_playwright() as p,
    ):
        await wait_until(lambda: service.publisher.connected)
        car = service.daemon.car
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"http://{host}:{port}/")
            await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
            message = page.locator("#message")
            row = page.locator("#workshop-rows tr").filter(
                has=page.locator("button[data-command='inject_fault'][data-part='brake_left']")
            )
            field = row.locator("input[data-command='inject_fault'][data-field='intermittent']")
            button = row.locator("button[data-command='inject_fault']")
            await row.locator("select[data-field='failure']").select_option("open_circuit")
            # What is not a presence is refused by the daemon, which names the field.
            for bad in ("0", "1", "x", "1e999"):
                await field.fill(bad)
                await button.click()
                await playwright.expect(message).to_contain_text(
                    "inject_fault: intermittent: ", timeout=10_000
                )
                await page.evaluate("document.getElementById('message').textContent = ''")
            assert car.failures() == {}
            await field.fill("0.5")
            await button.click()
            await playwright.expect(message).to_have_text("inject_fault: ok", timeout=10_000)
            assert car.failures() == {"brake_left": {"open_circuit"}}
            assert car.parts["brake_left"].held == {"open_circuit": 0.5}
            # Left empty: a standing failure, as before.
            await field.fill("")
            tail = page.locator("#workshop-rows tr").filter(
                has=page.locator("button[data-command='inject_fault'][data-part='tail_left']")
            )
            await tail.locator("select[data-field='failure']").select_option("degraded")
            await tail.locator("button[data-command='inject_fault']").click()
            await wait_until(lambda: "tail_left" in car.failures())
            assert car.parts["tail_left"].held == {"degraded": None}
        finally:
            await browser.close()
