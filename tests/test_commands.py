"""Commands: each one works; every kind of malformed request gets an error naming the problem and
the daemon carries on. The parser is fuzzed with hypothesis; the rest runs against a real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carlightd.app.daemon import Service
from carlightd.contract.commands import COMMANDS, ClearFaults, InjectFault, SetIgnition
from carlightd.core.domain import Ignition
from carlightd.outputs.mqtt.commands import MAX_REQUEST_BYTES, CommandError, parse_request
from tests.brokers import subscribed
from tests.conftest import running, service_settings, wait_until
from tests.test_mqtt_contract import request

# --- the parser, pure ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(command=st.text(max_size=30), payload=st.binary(max_size=300))
def test_any_bytes_give_a_request_or_a_command_error(command: str, payload: bytes) -> None:
    try:
        parsed = parse_request(command, payload)
    except CommandError as error:
        assert error.message
    else:
        assert type(parsed) is COMMANDS[command].request


@given(command=st.sampled_from(sorted(COMMANDS)), body=json_values)
def test_any_json_gives_a_request_or_a_command_error(command: str, body: Any) -> None:
    try:
        parse_request(command, json.dumps(body).encode())
    except CommandError as error:
        assert error.message


@given(
    component=st.text(min_size=1, max_size=64),
    failure=st.text(min_size=1, max_size=64),
    transaction=st.none() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=128),
)
def test_well_formed_inject_round_trips(component: str, failure: str, transaction: Any) -> None:
    body = {"component": component, "failure": failure, "transaction": transaction}
    parsed = parse_request("inject_fault", json.dumps(body).encode())
    assert parsed == InjectFault(component=component, failure=failure, transaction=transaction)


@given(state=st.sampled_from(["off", "on", "run"]))
def test_set_ignition(state: str) -> None:
    parsed = parse_request("set_ignition", json.dumps({"state": state}).encode())
    assert isinstance(parsed, SetIgnition)
    assert Ignition(parsed.state) is Ignition(state)


def test_empty_body_is_an_empty_object() -> None:
    assert parse_request("clear_faults", b"") == ClearFaults()


@pytest.mark.parametrize(
    ("command", "payload", "message"),
    [
        ("inject_fault", b"\xff\xfe{}", "payload is not UTF-8 text"),
        ("inject_fault", b"{component: 1", "payload is not JSON"),
        ("inject_fault", b"[1, 2]", "payload must be a JSON object, not an array"),
        ("inject_fault", b'"brake_left"', "payload must be a JSON object, not a string"),
        ("explode", b"{}", "unknown command 'explode'; known: inject_fault"),
        (
            "inject_fault",
            b'{"component": 3, "failure": "open_circuit"}',
            "component: Input should be a valid string",
        ),
        ("inject_fault", b'{"component": "x"}', "failure: Field required"),
        ("inject_fault", b'{"component": "x", "failure": "y", "colour": 1}', "colour: unknown key"),
        ("set_ignition", b'{"state": "start"}', "state: Input should be 'off', 'on' or 'run'"),
        ("set_ignition", b'{"state": true}', "state: Input should be 'off', 'on' or 'run'"),
        ("repair", b"{" + b" " * MAX_REQUEST_BYTES + b"}", f"the limit is {MAX_REQUEST_BYTES}"),
        ("repair", b'{"component": "x", "transaction": [1]}', "transaction: must be a string"),
    ],
)
def test_malformed_requests_are_named(command: str, payload: bytes, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_request(command, payload)
    assert message in caught.value.message


# --- over a real broker -------------------------------------------------------------------------


async def test_each_command_and_each_malformed_request(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    service = Service(service_settings(host, port, tmp_path))
    root = service.publisher.topics.root
    car = service.daemon.car
    async with running(service):
        await wait_until(lambda: service.publisher.connected)

        async def ask(command: str, body: bytes) -> dict[str, Any]:
            return await request(host, port, root, command, body)

        ok = await ask("set_ignition", b'{"state": "on", "transaction": 7}')
        assert ok == {"status": "ok", "data": {"ignition": "on"}, "transaction": 7}
        assert car.ignition is Ignition.ON
        ok = await ask("inject_fault", b'{"component": "battery", "failure": "weak"}')
        assert ok["status"] == "ok"
        assert car.failures() == {"battery": {"weak"}}
        # The malformed: each gets an error naming the problem, the transaction when readable.
        cases = {
            ("inject_fault", b"\xc3\x28"): "payload is not UTF-8 text",
            ("inject_fault", b"not json"): "payload is not JSON",
            ("inject_fault", b"[]"): "payload must be a JSON object",
            ("warp_drive", b"{}"): "unknown command 'warp_drive'",
            (
                "inject_fault",
                b'{"component": "flux_capacitor", "failure": "weak", "transaction": "a"}',
            ): "component: no component 'flux_capacitor'",
            (
                "inject_fault",
                b'{"component": "headlamp_left", "failure": "dead_cell"}',
            ): "failure: a lamp cannot have failure 'dead_cell'",
            ("repair", b'{"component": ["battery"]}'): "component: Input should be a valid string",
            (
                "repair",
                b'{"component": "battery", "pad": "' + b"x" * 5000 + b'"}',
            ): "the limit is 4096",
        }
        for (command, body), message in cases.items():
            response = await ask(command, body)
            assert response["status"] == "error", (command, body[:40])
            assert message in response["error"]
            assert set(response) == {"status", "error", "transaction"}
        unknown_part = await ask(
            "inject_fault",
            b'{"component": "flux_capacitor", "failure": "weak", "transaction": "a"}',
        )
        assert unknown_part["transaction"] == "a"
        # Still running, still obeying.
        ok = await ask("repair", b'{"component": "battery", "transaction": "r"}')
        assert ok == {"status": "ok", "data": {"component": "battery"}, "transaction": "r"}
        assert car.failures() == {}
        cycles = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 2)


async def test_clear_faults_clears_now_and_faults_return(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    service = Service(service_settings(host, port, tmp_path))
    root = service.publisher.topics.root
    service.daemon.car.inject("tail_left", "open_circuit")
    async with running(service):
        await wait_until(lambda: service.daemon.diagnoser.cycle >= 3)
        memory = service.daemon.diagnoser.memory
        assert memory.records
        response = await request(host, port, root, "clear_faults", b"{}")
        assert response == {"status": "ok", "data": {"cleared": 1}, "transaction": None}
        # The bulb is still out: after debounce it is back.
        target = service.daemon.diagnoser.cycle + 3
        await wait_until(lambda: service.daemon.diagnoser.cycle >= target)
        assert ("tail_left", "open_circuit") in memory.records


async def test_commands_disabled(broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = broker
    service = Service(service_settings(host, port, tmp_path, commands__enabled=False))
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        response = await request(
            host,
            port,
            root,
            "inject_fault",
            b'{"component": "battery", "failure": "weak", "transaction": "x"}',
        )
        assert response == {
            "status": "error",
            "error": "commands are disabled on this daemon ([commands] enabled = false)",
            "transaction": "x",
        }
        assert service.daemon.car.failures() == {}


async def test_a_command_sent_the_moment_online_appears_is_answered(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    service = Service(service_settings(host, port, tmp_path))
    root = service.publisher.topics.root
    async with subscribed(host, port, f"{root}/#") as sub, running(service):
        await sub.wait_for(lambda: sub.on(f"{root}/availability") == [b"online"], 10.0)
        await sub.client.publish(
            f"{root}/request/set_ignition", b'{"state": "on", "transaction": "first"}', qos=1
        )
        await sub.wait_for(lambda: sub.on(f"{root}/response/set_ignition"), 5.0, "a response")
        assert json.loads(sub.on(f"{root}/response/set_ignition")[0])["status"] == "ok"
