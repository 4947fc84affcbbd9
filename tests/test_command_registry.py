"""Commands are one registry (`carlightd.contract.commands.COMMANDS`): the daemon's handler, the
schemas, the CLI and the dashboard each offer exactly its commands, and an entry that does not fit
its request model fails at import. The CLI, the dashboard's endpoint and its page are driven
against a real daemon on a real broker, every command in turn."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from carlightd import cli
from carlightd.app.daemon import Service
from carlightd.consumers.dashboard.server import LiveState, serving
from carlightd.contract.commands import (
    COMMANDS,
    Argument,
    Cli,
    Command,
    InjectFault,
    Repair,
    Request,
    SetIgnition,
)
from carlightd.core.domain import Ignition, Kind, UnknownFailureError
from carlightd.errors import UnknownPartError
from carlightd.outputs.mqtt.commands import CommandHandler
from carlightd.schemas import MODELS
from tests.conftest import running, service_settings, wait_until
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, playwright

SCHEMAS = Path(__file__).parents[1] / "docs" / "schemas"
# The CLI's subcommands that are not requests to the daemon.
OTHER_SUBCOMMANDS = {
    "run",
    "demo",
    "check-config",
    "health",
    "schema",
    "faults",
    "watch",
    "fleet",
    "dashboard",
}


def sample(command: Command[Any], argument: Argument) -> str:
    """A value the default car accepts for any argument, so every command can be sent as is."""
    match argument.names:
        case "part":
            return "brake_left"
        case "failure":
            return "open_circuit"
        case "choice":
            return command.choices(argument)[-1]


def sample_body(command: Command[Any]) -> dict[str, str]:
    return {argument.field: sample(command, argument) for argument in command.arguments}


# --- the registry -------------------------------------------------------------------------------


def test_each_entry_is_filed_under_its_own_name_and_asked_for_in_one_way() -> None:
    for name, command in COMMANDS.items():
        assert command.name == name
        assert issubclass(command.request, Request)
        assert command.description
        assert "\n" not in command.description
    for unique in ("label", "cli"):
        values = [getattr(c, unique) for c in COMMANDS.values()]
        assert len(set(values)) == len(values), unique
    subcommands = {c.cli.subcommand for c in COMMANDS.values()}
    assert not subcommands & OTHER_SUBCOMMANDS


def test_the_ignition_choices_are_the_ignitions() -> None:
    command = COMMANDS["set_ignition"]
    assert command.choices(command.arguments[0]) == tuple(i.value for i in Ignition)


class OnlyFailure(Request):
    failure: str


async def _nothing(workshop: Any, request: Any) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    ("request_model", "arguments", "message"),
    [
        (
            Repair,
            (Argument("part", "part_id", "part"),),
            "argument 'part' fills 'part_id', which Repair does not have",
        ),
        (
            Repair,
            (Argument("part", "component", "choice"),),
            "argument 'part' is a choice, but Repair.component is not a Literal of strings",
        ),
        (
            InjectFault,
            (Argument("part", "component", "part"),),
            "no argument fills the required field(s) failure of InjectFault",
        ),
        (
            SetIgnition,
            (),
            "no argument fills the required field(s) state of SetIgnition",
        ),
        (
            OnlyFailure,
            (Argument("failure", "failure", "failure"),),
            "a failure is named without its part",
        ),
    ],
)
def test_an_entry_that_does_not_fit_its_model_fails_at_once(
    request_model: type[Request], arguments: tuple[Argument, ...], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Command("broken", request_model, _nothing, "d", "b", Cli("broken", "h"), arguments)


# --- the handler --------------------------------------------------------------------------------


class RecordingWorkshop:
    """The Workshop seam, remembering what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        if part_id == "nowhere":
            raise UnknownPartError(part_id, ["brake_left"])
        if failure == "melted":
            raise UnknownFailureError(Kind.LAMP, failure)
        self.calls.append(("inject", part_id, failure, *([intermittent] if intermittent else [])))

    def repair(self, part_id: str) -> None:
        self.calls.append(("repair", part_id))

    def set_ignition(self, ignition: Ignition) -> None:
        self.calls.append(("set_ignition", ignition))

    async def clear_faults(self) -> int:
        self.calls.append(("clear_faults",))
        return 3


# What each command did before the registry, and still does.
EXPECTED: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "inject_fault": (
        ("inject", "brake_left", "open_circuit"),
        {"component": "brake_left", "failure": "open_circuit"},
    ),
    "repair": (("repair", "brake_left"), {"component": "brake_left"}),
    "clear_faults": (("clear_faults",), {"cleared": 3}),
    "set_ignition": (("set_ignition", Ignition.RUN), {"ignition": "run"}),
}


async def test_the_handler_carries_out_exactly_the_registrys_commands() -> None:
    assert set(EXPECTED) == set(COMMANDS)
    for name, command in COMMANDS.items():
        workshop = RecordingWorkshop()
        handler = CommandHandler(workshop, enabled=True)
        body = {**sample_body(command), "transaction": name}
        response = await handler.handle(name, json.dumps(body).encode())
        call, data = EXPECTED[name]
        assert response.status == "ok", response
        assert (response.data, response.transaction) == (data, name)
        assert workshop.calls == [call]
    refused = await CommandHandler(RecordingWorkshop(), enabled=True).handle("fly", b"{}")
    assert refused.status == "error"
    assert refused.error.endswith(f"known: {', '.join(COMMANDS)}")


async def test_what_the_workshop_refuses_names_the_field() -> None:
    handler = CommandHandler(RecordingWorkshop(), enabled=True)
    no_part = await handler.handle("inject_fault", b'{"component": "nowhere", "failure": "x"}')
    assert no_part.status == "error"
    assert no_part.error == "component: no component 'nowhere'; known: brake_left"
    no_failure = await handler.handle("inject_fault", b'{"component": "a", "failure": "melted"}')
    assert no_failure.status == "error"
    assert no_failure.error.startswith("failure: a lamp cannot have failure 'melted'")


# --- the schemas --------------------------------------------------------------------------------


def test_the_schemas_hold_exactly_the_registrys_requests() -> None:
    requests = {n.removeprefix("request-"): m for n, m in MODELS.items() if n.startswith("request")}
    assert requests == {name: command.request for name, command in COMMANDS.items()}
    published = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("request-*")}
    assert published == {f"request-{name}" for name in COMMANDS}


# --- the CLI ------------------------------------------------------------------------------------


def test_the_cli_offers_exactly_the_registrys_commands() -> None:
    parser = cli._parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    assert isinstance(subparsers.choices, dict)
    assert set(subparsers.choices) - OTHER_SUBCOMMANDS == {
        c.cli.subcommand for c in COMMANDS.values()
    }
    for command in COMMANDS.values():
        sub = subparsers.choices[command.cli.subcommand]
        assert sub.description == command.cli.help
        positional = [(a.dest, a.choices) for a in sub._actions if not a.option_strings]
        assert positional == [(a.metavar, command.choices(a) or None) for a in command.arguments]
        args = parser.parse_args(
            [command.cli.subcommand, *(sample(command, a) for a in command.arguments)]
        )
        assert cli._COMMAND_OF[args.command] is command


@pytest.fixture
def daemon_env(broker: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    service = Service(service_settings(*broker, tmp_path / "state"))
    monkeypatch.setenv("CARLIGHTD_MQTT__HOST", broker[0])
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", str(broker[1]))
    monkeypatch.setenv("CARLIGHTD_MQTT__BASE_TOPIC", service.settings.mqtt.base_topic)
    return service


async def test_the_cli_sends_every_command_to_the_daemon(
    daemon_env: Service, capfd: pytest.CaptureFixture[str]
) -> None:
    service = daemon_env
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        for command in COMMANDS.values():
            argv = [command.cli.subcommand, *(sample(command, a) for a in command.arguments)]
            assert await asyncio.to_thread(cli.main, argv) == 0, argv
            lines = capfd.readouterr().out.splitlines()  # the daemon logs there too
            assert any(line.startswith(f"{command.name}: ok ") for line in lines), lines
            if command.name == "set_ignition":  # it reached the car
                assert service.daemon.car.ignition == Ignition.RUN


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_offers_exactly_the_registrys_commands(tmp_path: Path) -> None:
    forms = LiveState(service_settings("127.0.0.1", 1883, tmp_path)).snapshot()["workshop"]
    assert [form["name"] for form in forms] == list(COMMANDS)
    for form, command in zip(forms, COMMANDS.values(), strict=True):
        assert form["label"] == command.label
        assert [(a["field"], a["names"], tuple(a["choices"])) for a in form["arguments"]] == [
            (a.field, a.names, command.choices(a)) for a in command.arguments
        ]


async def test_the_dashboard_endpoint_sends_exactly_the_registrys_commands(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    service = Service(settings)
    async with (
        running(service),
        serving(settings, "127.0.0.1", 0) as (host, port),
        aiohttp.ClientSession() as http,
    ):
        await wait_until(lambda: service.publisher.connected)
        url = f"http://{host}:{port}/api/command"
        for name, command in COMMANDS.items():
            async with http.post(url, json={"command": name, "body": sample_body(command)}) as got:
                assert got.status == 200
                assert (await got.json())["status"] == "ok", name
        # Not a command name at all (a list cannot even be looked up): refused, not a crash.
        not_names: list[object] = ["fly", [], {}, 7, None]
        for not_a_name in not_names:
            async with http.post(url, json={"command": not_a_name, "body": {}}) as refused:
                assert refused.status == 400, not_a_name
                assert (await refused.json())["error"] == "unknown command"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)
async def test_the_page_draws_a_control_per_command_and_each_one_works(
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
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"http://{host}:{port}/")
            await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
            parts = len(settings.components)
            drawn = await page.eval_on_selector_all(
                "#workshop-rows button", "buttons => buttons.map(b => b.dataset.command)"
            )
            assert set(drawn) == set(COMMANDS)
            message = page.locator("#message")
            for name, command in COMMANDS.items():
                per_part = any(a.names == "part" for a in command.arguments)
                where = "[data-part='brake_left']" if per_part else ":not([data-part])"
                buttons = page.locator(f"#workshop-rows button[data-command='{name}']")
                assert await buttons.count() == (parts if per_part else 1)
                row = page.locator("#workshop-rows tr").filter(
                    has=page.locator(f"button[data-command='{name}']{where}")
                )
                for argument in command.arguments:
                    if argument.names != "part":
                        chosen = f"select[data-command='{name}'][data-field='{argument.field}']"
                        await row.locator(chosen).select_option(sample(command, argument))
                await row.locator(f"button[data-command='{name}']").click()
                await playwright.expect(message).to_have_text(f"{name}: ok", timeout=10_000)
                if name == "set_ignition":  # what the page sent reached the car
                    assert service.daemon.car.ignition == Ignition.RUN
            await page.wait_for_selector("#part-brake_left.ok", timeout=10_000)
        finally:
            await browser.close()
