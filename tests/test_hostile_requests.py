"""Whatever arrives on ROOT/request/# — the named attacks that once stopped the daemon, retained
requests, a flood — gets an answer where one can be addressed, and the daemon goes on cycling.

The parser alone is fuzzed in test_commands.py; here the whole receive path runs on the real
broker (tests/test_fuzz_requests.py fuzzes it end to end with hypothesis).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from carlightd.app.daemon import Service
from carlightd.contract.payloads import MAX_BROKER_SEQ
from carlightd.outputs.mqtt.commands import MAX_NESTING, parse_request
from carlightd.outputs.mqtt.inbox import MAX_TOPIC_BYTES
from tests.conftest import running, service_settings, wait_until

# One message under the 4 KB limit, each of which stopped the daemon (or made it lie) in v1.
NESTED_ARRAY = b"[" * 2000 + b"]" * 2000
NESTED_WITH_TRANSACTION = b'{"transaction": "t-deep", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"
SURROGATE_TRANSACTION = b'{"transaction": "\\ud800"}'
SURROGATE_KEY = b'{"\\udfff": 1, "transaction": "t-key"}'
SURROGATE_COMPONENT = b'{"component": "\\ud800", "failure": "open_circuit", "transaction": "t-c"}'


async def _ask(
    client: aiomqtt.Client, root: str, command: str, payload: bytes, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Publish one request and return the next response on its response topic."""
    response_topic = f"{root}/response/{command}"
    await client.subscribe(response_topic, qos=1)
    await client.publish(f"{root}/request/{command}", payload, qos=1)
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            if str(message.topic) == response_topic:
                body = message.payload
                assert isinstance(body, bytes)
                parsed: dict[str, Any] = json.loads(body)
                return parsed
    raise AssertionError("unreachable")


def _service(broker: tuple[str, int], tmp_path: Path, **overrides: Any) -> Service:
    return Service(service_settings(*broker, tmp_path, **overrides), heartbeat=False)


def test_the_parser_refuses_deep_nesting_before_decoding_it() -> None:
    for payload in (NESTED_ARRAY, NESTED_WITH_TRANSACTION):
        with pytest.raises(Exception, match=f"nested .* levels deep; the limit is {MAX_NESTING}"):
            parse_request("clear_faults", payload)


async def test_named_attacks_get_error_responses_and_the_daemon_goes_on(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = _service(broker, tmp_path)
    root = service.publisher.topics.root
    cases: list[tuple[str, bytes, str, Any]] = [
        # command, payload, what the error says, the transaction echoed
        ("inject_fault", NESTED_ARRAY, "nested 2000 levels deep", None),
        ("clear_faults", NESTED_WITH_TRANSACTION, "nested 1501 levels deep", "t-deep"),
        ("clear_faults", SURROGATE_TRANSACTION, "transaction: text with a lone surrogate", None),
        ("clear_faults", SURROGATE_KEY, "(a key): text with a lone surrogate", "t-key"),
        ("inject_fault", SURROGATE_COMPONENT, "component: text with a lone surrogate", "t-c"),
        ("no_such_command", b'{"transaction": "t-unknown"}', "unknown command", "t-unknown"),
        (
            "set_ignition",
            b'{"state": "run", "transaction": ' + b"9" * 4000 + b"}",
            "transaction: must be",
            None,
        ),
        ("repair", b'{"component": 1e999, "transaction": 7}', "component", 7),
        ("repair", b"\xff\xfe\x00", "not UTF-8", None),
        ("set_ignition", b'{"state": "on", "state": "off", "transaction": 3}', "twice", 3),
        ("set_ignition", b'{"state": NaN, "transaction": "t-nan"}', "NaN is not", "t-nan"),
    ]
    async with running(service), aiomqtt.Client(*broker) as client:
        await wait_until(lambda: service.publisher.connected)
        for command, payload, error, transaction in cases:
            response = await _ask(client, root, command, payload)
            assert response["status"] == "error", (command, payload[:40], response)
            assert error in response["error"], response
            assert response["transaction"] == transaction, response
        cycles = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
        # Still serving: a good request after all of that is carried out.
        ok = await _ask(
            client,
            root,
            "inject_fault",
            b'{"component": "tail_left", "failure": "open_circuit", "transaction": "after"}',
        )
        assert ok == {
            "status": "ok",
            "data": {"component": "tail_left", "failure": "open_circuit"},
            "transaction": "after",
        }
    assert service.publisher.requests.failed == 0


async def test_a_command_whose_response_topic_is_illegal_is_logged_not_answered(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = _service(broker, tmp_path)
    root = service.publisher.topics.root
    # The request topic fits MQTT's 65,535 bytes; the response topic, one byte longer, does not.
    command = "x" * (MAX_TOPIC_BYTES - len(f"{root}/request/"))
    with capture_logs() as logs:
        async with running(service), aiomqtt.Client(*broker) as client:
            await wait_until(lambda: service.publisher.connected)
            await client.publish(f"{root}/request/{command}", b"{}", qos=1)
            await wait_until(lambda: service.publisher.requests.unanswerable == 1)
            cycles = service.daemon.diagnoser.cycle
            await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
            response = await _ask(client, root, "clear_faults", b'{"transaction": 1}')
            assert response["status"] == "ok"
    [line] = [entry for entry in logs if entry["event"] == "request_unanswerable"]
    assert "65535" in line["problem"]
    assert len(line["command"]) <= 64  # the log line is bounded too


async def test_retained_requests_are_never_executed_and_logged_once_per_topic(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = _service(broker, tmp_path)
    root = service.publisher.topics.root
    inject = f"{root}/request/inject_fault"
    async with aiomqtt.Client(*broker) as client:
        body = b'{"component": "brake_left", "failure": "open_circuit"}'
        await client.publish(inject, body, qos=1, retain=True)
        try:
            with capture_logs() as logs:
                async with running(service):
                    await wait_until(lambda: service.publisher.connected)
                    cycles = service.daemon.diagnoser.cycle
                    await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 5)
                    service.publisher._reconnect.set()  # a reconnection sees it again
                    await wait_until(lambda: service.publisher.connections == 2)
                    await wait_until(lambda: service.publisher.requests.retained_ignored == 2)
                    await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 10)
                    assert not service.daemon.car.parts["brake_left"].held
                    assert service.publisher.requests.received == 0
        finally:
            await client.publish(inject, b"", qos=1, retain=True)
    ignored = [entry for entry in logs if entry["event"] == "retained_request_ignored"]
    assert len(ignored) == 1
    assert f"mosquitto_pub -r -n -t '{inject}'" in ignored[0]["fix"]


async def test_a_request_flood_is_bounded_and_summarised(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    service = _service(broker, tmp_path)
    root = service.publisher.topics.root
    sent = 3000
    with capture_logs() as logs:
        async with running(service):
            await wait_until(lambda: service.publisher.connected)
            cycles_before = service.daemon.diagnoser.cycle
            async with aiomqtt.Client(*broker, max_queued_outgoing_messages=0) as client:
                for number in range(sent):
                    await client.publish(f"{root}/request/bogus", b"{}", qos=0)
                    if number % 200 == 0:
                        await asyncio.sleep(0)
            stats = service.publisher.requests
            await wait_until(lambda: stats.received + stats.dropped == sent, timeout_s=60)
            await wait_until(lambda: stats.answered == stats.received, timeout_s=60)
            cycles = service.daemon.diagnoser.cycle
            await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
            print(
                f"flood: sent {sent}, answered {stats.answered}, dropped {stats.dropped}, "
                f"cycles during and after {service.daemon.diagnoser.cycle - cycles_before}"
            )
    command_lines = [entry for entry in logs if entry["event"] == "command"]
    summaries = [entry for entry in logs if entry["event"] == "requests_summary"]
    # Per-request lines are bounded per interval; the rest is said in the summary.
    assert len(command_lines) < sent / 10
    assert summaries, "no summary line"
    totals = summaries[-1]["totals"]
    assert totals["received"] + totals["dropped"] == sent
    assert totals["log_lines_suppressed"] == stats.answered - len(command_lines)


def _status(**fields: Any) -> bytes:
    status = {
        "vehicle": "demo-car",
        "updated_at": "2020-01-01T00:00:00Z",
        "instance": "forged:1:x",
        "started_at": "2020-01-01T00:00:00Z",
        "state_saved": True,
        "problems": [],
        "last_event_seq": 0,
    }
    return json.dumps({**status, **fields}).encode()


async def _first_event_seq(
    service: Service, broker: tuple[str, int], part: str = "tail_left"
) -> int:
    root = service.publisher.topics.root
    async with aiomqtt.Client(*broker) as client:
        await client.subscribe(f"{root}/events", qos=1)
        service.daemon.car.inject(part, "open_circuit")
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seq: int = json.loads(message.payload)["seq"]
                return seq
    raise AssertionError("unreachable")


FORGED_STATUSES = {
    "at the seq limit": _status(last_event_seq=2**53 - 1),
    "naive time": _status(last_event_seq=100, updated_at="2030-01-01T00:00:00"),
    "6 MB": _status(problems=[1] * 2_000_000),
    "not JSON": b"{not json",
    "another vehicle": _status(vehicle="another-car", last_event_seq=100),
}


@pytest.mark.parametrize("forged", FORGED_STATUSES.values(), ids=FORGED_STATUSES.keys())
async def test_a_forged_status_cannot_push_the_sequence_or_stop_the_daemon(
    broker: tuple[str, int], tmp_path: Path, forged: bytes
) -> None:
    service = _service(broker, tmp_path)
    status_topic = service.publisher.topics.status
    async with aiomqtt.Client(*broker) as client:
        await client.publish(status_topic, forged, qos=1, retain=True)
    try:
        with capture_logs() as logs:
            async with running(service):
                await wait_until(lambda: service.publisher.connected)
                assert await _first_event_seq(service, broker) == 1
                cycles = service.daemon.diagnoser.cycle
                await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
        assert service.publisher.requests.failed == 0
        assert [e for e in logs if e["event"] == "status_not_ours"]
        # Our own status replaced the forgery, and a restart reads it back.
        again = _service(broker, tmp_path)
        async with running(again):
            await wait_until(lambda: again.publisher.connected)
            assert await _first_event_seq(again, broker, "brake_right") > 1
    finally:
        async with aiomqtt.Client(*broker) as client:
            await client.publish(status_topic, b"", qos=1, retain=True)


async def test_a_status_flood_is_not_a_log_flood(broker: tuple[str, int], tmp_path: Path) -> None:
    service = _service(broker, tmp_path)
    status_topic = service.publisher.topics.status
    with capture_logs() as logs:
        async with running(service), aiomqtt.Client(*broker) as client:
            await wait_until(lambda: service.publisher.connected)
            for number in range(500):
                await client.publish(status_topic, _status(instance=f"x:{number}:y"), qos=1)
                await client.publish(status_topic, b"{bad", qos=1)
            cycles = service.daemon.diagnoser.cycle
            await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
        async with aiomqtt.Client(*broker) as client:
            await client.publish(status_topic, b"", qos=1, retain=True)
    lines = [e for e in logs if e["event"] in ("status_not_ours", "second_daemon_for_vehicle")]
    assert 0 < len(lines) <= 2 * 20  # at most 20 per summary interval


async def test_its_own_status_is_never_taken_for_a_forgery(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    """A mark at the belief bound is followed; the daemon's own statuses past it, echoed back to
    it, are its own word, not a forgery to warn about."""
    service = _service(broker, tmp_path)
    status_topic = service.publisher.topics.status
    async with aiomqtt.Client(*broker) as client:
        await client.publish(
            status_topic, _status(last_event_seq=MAX_BROKER_SEQ), qos=1, retain=True
        )
    try:
        with capture_logs() as logs:
            async with running(service):
                await wait_until(lambda: service.publisher.connected)
                assert await _first_event_seq(service, broker) == MAX_BROKER_SEQ + 1
                await wait_until(lambda: len(service.publisher.outbox) == 0)
                cycles = service.daemon.diagnoser.cycle
                await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
        assert not [e for e in logs if e["event"] == "status_not_ours"]
    finally:
        async with aiomqtt.Client(*broker) as client:
            await client.publish(status_topic, b"", qos=1, retain=True)
