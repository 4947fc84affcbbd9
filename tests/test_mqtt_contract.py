"""The MQTT contract (DESIGN §5) against a real broker: every topic and field, one fault's life."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from carlightd.app.daemon import Service
from carlightd.core.diagnoser import CycleReport, Telemetry
from carlightd.core.domain import Ignition, Kind
from carlightd.core.dtc import WarningLamp
from carlightd.core.memory import FreezeFrame, StoredDtc
from carlightd.outputs.mqtt.publisher import Publisher
from tests.brokers import Subscriber, subscribed
from tests.conftest import running, service_settings, using_embedded_broker

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
COMPONENT_FIELDS = {
    "component",
    "kind",
    "status",
    "failure",
    "dtc",
    "dtc_status",
    "reason",
    "reading",
    "updated_at",
}
FAULT_FIELDS = {
    "component",
    "kind",
    "failure",
    "dtc",
    "status",
    "since",
    "description",
    "consequence_of",
    "occurrences",  # v1.1
    "freeze_frame",  # v1.1
}
DTC_FIELDS = {
    "component",
    "kind",
    "failure",
    "dtc",
    "dtc_status",
    "occurrences",
    "aging_counter",
    "first_failed",
    "last_failed",
    "freeze_frame",
}
FREEZE_FRAME_FIELDS = {
    "at",
    "ignition",
    "engine_rpm",
    "bus_v",
    "battery_soc_percent",
    "temperature_c",
}
EVENT_FIELDS = {"seq", "type", "component", "kind", "failure", "dtc", "at"}


def latest(sub: Subscriber, topic: str) -> Any:
    payloads = sub.json_on(topic)
    return payloads[-1] if payloads else None


async def request(host: str, port: int, root: str, command: str, body: bytes) -> dict[str, Any]:
    client = aiomqtt.Client(host, port, identifier=f"test-req-{uuid.uuid4().hex[:8]}")
    async with asyncio.timeout(10), client:
        await client.subscribe(f"{root}/response/{command}", qos=1)
        await client.publish(f"{root}/request/{command}", body, qos=1)
        async for message in client.messages:
            if not message.topic.matches(f"{root}/response/{command}"):
                continue  # amqtt also hands over other retained messages
            payload = message.payload
            assert isinstance(payload, bytes)
            response: dict[str, Any] = json.loads(payload)
            return response
    raise AssertionError("no response")


async def test_the_whole_contract_and_one_faults_life(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    service = Service(service_settings(host, port, tmp_path))
    root = service.publisher.topics.root
    async with subscribed(host, port, f"{root}/#") as sub:
        async with running(service):
            faults_topic = f"{root}/faults"
            await sub.wait_for(lambda: sub.on(f"{root}/availability"), what="availability")
            assert sub.on(f"{root}/availability")[-1] == b"online"
            await sub.wait_for(lambda: latest(sub, faults_topic), what="faults")
            healthy = latest(sub, faults_topic)
            assert set(healthy) == {"vehicle", "updated_at", "warning_lamps", "faults"}
            assert healthy["vehicle"] == "demo-car"
            assert healthy["faults"] == []
            assert healthy["warning_lamps"] == {
                "bulb": False,
                "battery": False,
                "check_engine": False,
            }
            assert ISO_UTC.match(healthy["updated_at"])
            # The fault memory (v1.1), retained: empty on a car that never failed.
            await sub.wait_for(lambda: latest(sub, f"{root}/dtcs"), what="dtcs")
            memory = latest(sub, f"{root}/dtcs")
            assert set(memory) == {"vehicle", "updated_at", "dtcs"}
            assert memory["vehicle"] == "demo-car"
            assert memory["dtcs"] == []
            assert ISO_UTC.match(memory["updated_at"])

            parts = [c.id for c in service.settings.components]
            await sub.wait_for(
                lambda: all(sub.on(f"{root}/components/{p}") for p in parts), what="all components"
            )
            for part in parts:
                state = latest(sub, f"{root}/components/{part}")
                assert set(state) == COMPONENT_FIELDS
                assert state["component"] == part
                assert state["status"] == "ok"
                assert state["failure"] is None
                assert isinstance(state["reading"], dict)
                assert ISO_UTC.match(state["updated_at"])

            await sub.wait_for(lambda: sub.on(f"{root}/telemetry"), what="telemetry")
            telemetry = latest(sub, f"{root}/telemetry")
            assert telemetry["ignition"] == "run"
            assert 13.5 < telemetry["bus_v"] < 14.8
            assert {"voltage_v", "current_a", "temperature_c"} <= set(telemetry["battery"])
            assert {"output_v", "output_a", "ripple_v", "field_duty"} <= set(
                telemetry["alternator"]
            )

            # A bulb goes out.
            response = await request(
                host,
                port,
                root,
                "inject_fault",
                b'{"component": "brake_left", "failure": "open_circuit", "transaction": "tx-1"}',
            )
            assert response == {
                "status": "ok",
                "data": {"component": "brake_left", "failure": "open_circuit"},
                "transaction": "tx-1",
            }
            events_topic = f"{root}/events"
            await sub.wait_for(
                lambda: any(e["type"] == "fault_confirmed" for e in sub.json_on(events_topic)),
                what="fault_confirmed",
            )
            # Events go first; the retained fault list follows.
            faults = await sub.wait_for(
                lambda: (f := latest(sub, faults_topic))["warning_lamps"]["bulb"] and f,
                what="bulb lamp lit",
            )
            assert faults["warning_lamps"] == {
                "bulb": True,
                "battery": False,
                "check_engine": False,
            }
            [fault] = faults["faults"]
            assert set(fault) == FAULT_FIELDS
            assert fault["component"] == "brake_left"
            assert fault["dtc"] == "B1200"
            assert fault["status"] == "confirmed"
            assert fault["consequence_of"] is None
            assert ISO_UTC.match(fault["since"])
            assert fault["occurrences"] == 1
            assert set(fault["freeze_frame"]) == FREEZE_FRAME_FIELDS
            assert fault["freeze_frame"]["ignition"] == "run"
            lamp = await sub.wait_for(
                lambda: (
                    (c := latest(sub, f"{root}/components/brake_left"))["status"] == "failed" and c
                ),
                what="lamp failed",
            )
            assert lamp["dtc"] == "B1200"
            assert lamp["dtc_status"] & 0x08  # confirmedDTC
            # The replacement bulb.
            response = await request(host, port, root, "repair", b'{"component": "brake_left"}')
            assert response["status"] == "ok"
            await sub.wait_for(
                lambda: any(e["type"] == "fault_cleared" for e in sub.json_on(events_topic)),
                what="fault_cleared",
            )
            await sub.wait_for(lambda: latest(sub, faults_topic)["faults"] == [], what="no faults")
            # Healed, and still stored: the fault memory keeps the DTC with its freeze frame.
            [stored] = await sub.wait_for(
                lambda: (
                    (d := latest(sub, f"{root}/dtcs")["dtcs"]) and not d[0]["dtc_status"] & 1 and d
                ),
                what="the stored DTC, no longer failing",
            )
            assert set(stored) == DTC_FIELDS
            assert (stored["component"], stored["dtc"], stored["occurrences"]) == (
                "brake_left",
                "B1200",
                1,
            )
            assert stored["dtc_status"] & 0x08  # confirmedDTC
            assert stored["freeze_frame"] == fault["freeze_frame"]
            events = sub.json_on(events_topic)
            assert [(e["type"], e["component"], e["dtc"]) for e in events] == [
                ("fault_pending", "brake_left", "B1200"),
                ("fault_confirmed", "brake_left", "B1200"),
                ("fault_cleared", "brake_left", "B1200"),
            ]
            assert [e["seq"] for e in events] == [1, 2, 3]
            assert all(set(e) == EVENT_FIELDS for e in events)
            assert not any(
                r for t, _, r in sub.messages if t == events_topic
            )  # events not retained
        # A clean stop says offline.
        await sub.wait_for(
            lambda: sub.on(f"{root}/availability")[-1:] == [b"offline"], what="offline"
        )


async def test_retained_state_for_a_late_subscriber(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    if using_embedded_broker():
        pytest.skip("amqtt hands a new subscriber only some retained messages; needs Mosquitto")
    host, port = broker
    service = Service(service_settings(host, port, tmp_path))
    root = service.publisher.topics.root
    service.daemon.car.inject("alternator", "overcharging")
    async with running(service):
        async with subscribed(host, port, f"{root}/faults") as early:
            await early.wait_for(
                lambda: any(f["faults"] for f in early.json_on(f"{root}/faults")), what="fault"
            )
        # Someone who subscribes later gets the whole picture at once, from retained messages.
        async with subscribed(host, port, f"{root}/#") as late:
            await late.wait_for(
                lambda: len({t for t, _, r in late.messages if r}) >= 20, what="retained state"
            )
            retained = {t for t, _, r in late.messages if r}
            assert f"{root}/availability" in retained
            assert f"{root}/faults" in retained
            assert f"{root}/dtcs" in retained
            assert f"{root}/components/alternator" in retained
            assert latest(late, f"{root}/components/alternator")["failure"] == "overcharging"


async def test_components_are_published_on_change_not_every_cycle(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    # Telemetry (and component refresh) every 60 s: only changes may cause publishes.
    service = Service(service_settings(host, port, tmp_path, diagnostics__telemetry_s=60.0))
    root = service.publisher.topics.root
    async with subscribed(host, port, f"{root}/components/#") as sub, running(service):
        parts = len(service.daemon.diagnoser.tests)  # every configured part is published once
        await sub.wait_for(lambda: len(sub.messages) >= parts, what="first publication")
        cycles_before = service.daemon.diagnoser.cycle
        count_before = len(sub.messages)
        await sub.wait_for(
            lambda: service.daemon.diagnoser.cycle >= cycles_before + 10, what="10 cycles"
        )
        assert len(sub.messages) == count_before  # ten cycles, nothing changed, nothing sent
        service.daemon.car.inject("reverse", "degraded")
        await sub.wait_for(
            lambda: len(sub.on(f"{root}/components/reverse")) >= 3, what="pending then failed"
        )
        statuses = [p["status"] for p in sub.json_on(f"{root}/components/reverse")]
        assert statuses[-2:] == ["pending", "failed"]
        others = [t for t, _, _ in sub.messages[count_before:] if not t.endswith("/reverse")]
        assert others == []


def _report(at: datetime, dtcs: list[StoredDtc]) -> CycleReport:
    telemetry = Telemetry(Ignition.RUN, None, None, None, None, None)
    lamps: dict[WarningLamp, bool] = {"bulb": False, "battery": False, "check_engine": False}
    return CycleReport(1, at, {}, [], lamps, [], telemetry, dtcs)


async def test_the_fault_memory_is_published_retained_on_change_and_again_on_reconnect(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    clock = [0.0]  # the publisher's monotonic clock, moved by hand
    publisher = Publisher(service_settings(host, port, tmp_path), clock=lambda: clock[0])
    topic = publisher.topics.dtcs
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    frame = FreezeFrame(t0, Ignition.RUN, 812.0, 14.02, 81.5, -3.5)
    stored = StoredDtc("brake_left", Kind.LAMP, "open_circuit", "B1200", 0x2F, 2, 0, t0, t0, frame)
    stop = asyncio.Event()
    async with subscribed(host, port, topic) as sub:
        task = asyncio.create_task(publisher.run(stop))
        try:
            await publisher.deliver(_report(t0, [stored]))
            [first] = await sub.wait_for(lambda: sub.json_on(topic), what="ROOT/dtcs")
            assert set(first) == {"vehicle", "updated_at", "dtcs"}
            [dtc] = first["dtcs"]
            assert set(dtc) == DTC_FIELDS
            assert set(dtc["freeze_frame"]) == FREEZE_FRAME_FIELDS
            assert dtc["dtc_status"] == 0x2F
            assert dtc["occurrences"] == 2
            assert dtc["freeze_frame"]["ignition"] == "run"
            assert dtc["freeze_frame"]["temperature_c"] == -3.5
            assert ISO_UTC.match(dtc["first_failed"])
            assert ISO_UTC.match(dtc["last_failed"])
            # Cycles that change nothing in the memory send nothing (the time alone is no news),
            # and a fault still failing moves only `last_failed`: refreshed every telemetry_s.
            for second in range(1, 6):
                failing = dataclasses.replace(stored, last_failed=t0 + timedelta(seconds=second))
                await publisher.deliver(_report(t0 + timedelta(seconds=second), [failing]))
            clock[0] += publisher.telemetry_s
            await publisher.deliver(_report(t0 + timedelta(seconds=6), [failing]))
            await sub.wait_for(lambda: len(sub.on(topic)) >= 2, what="last_failed refreshed")
            aged = dataclasses.replace(failing, aging_counter=1, dtc_status=0x28)
            await publisher.deliver(_report(t0 + timedelta(seconds=7), [aged]))  # at once
            await sub.wait_for(lambda: len(sub.on(topic)) >= 3, what="the aged DTC")
            sent = [p["dtcs"][0] for p in sub.json_on(topic)]
            assert [d["aging_counter"] for d in sent] == [0, 0, 1]
            assert [d["last_failed"][11:19] for d in sent] == ["08:00:00", "08:00:05", "08:00:05"]
            # A new connection restates it (the broker may have lost everything).
            publisher._reconnect.set()
            await sub.wait_for(lambda: len(sub.on(topic)) >= 4, what="restated after reconnect")
            assert sub.json_on(topic)[-1] == sub.json_on(topic)[-2]
            # Cleared: an empty memory is said too.
            await publisher.deliver(_report(t0 + timedelta(seconds=8), []))
            await sub.wait_for(lambda: sub.json_on(topic)[-1]["dtcs"] == [], what="cleared")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    # A late subscriber is handed the memory at once.
    async with subscribed(host, port, topic) as late:
        [retained] = await late.wait_for(lambda: late.json_on(topic), what="retained ROOT/dtcs")
        assert retained["dtcs"] == []
        assert late.messages[0][2]  # the retain flag
