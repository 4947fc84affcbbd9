"""The scan-tool face of a running daemon (DESIGN §7), read by real clients: udsoncan over
doipclient (UDS over DoIP) and python-OBD (ELM327 over TCP), against the real broker. A clear from
a scan tool is the MQTT `clear_faults`: the same events, on MQTT, and the same saved state.

The clients are blocking: they run in threads (`asyncio.to_thread`), the daemon in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import obd  # type: ignore[import-untyped]  # python-OBD ships no type information
import pytest
import udsoncan
from doipclient.client import DoIPClient
from doipclient.connectors import DoIPClientUDSConnector
from udsoncan.client import Client
from udsoncan.Response import Response
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl

from carlightd.app.daemon import Service
from carlightd.config import Settings
from carlightd.core.domain import Kind
from carlightd.core.dtc import lookup
from carlightd.core.memory import FaultMemory
from carlightd.outputs.scan_tool import output
from carlightd.store.state import StateStore
from tests.brokers import subscribed
from tests.conftest import running, service_settings, wait_until
from tests.isotp_tester import DEFAULT_PORT, run_isotp_tester

pytestmark = pytest.mark.scan_tool

VIN = "CLDSMLT12V0000043"  # the packaged default
LAMP_DTC = lookup(Kind.LAMP, "open_circuit").uds_code  # B1200-13
BATTERY_DTC = lookup(Kind.BATTERY, "dead_cell").uds_code  # B1211-96
ALTERNATOR_DTC = lookup(Kind.ALTERNATOR, "no_output")  # P0620, emission-related

# udsoncan's client configuration for this ECU, as the README gives it; no server timing: a busy
# test machine may take longer than the 50 ms P2server the ECU announces.
UDS_CONFIG: dict[str, Any] = {
    **udsoncan.configs.default_client_config,
    "use_server_timing": False,
    "request_timeout": 10,
    "p2_timeout": 5,
    "dtc_snapshot_did_size": 2,
    "extended_data_size": 1,
    "data_identifiers": {
        0xF190: udsoncan.AsciiCodec(17),
        0x0101: ">H",
        0x0102: "B",
        0x0103: ">H",
        0x0104: "B",
        0x0105: "B",
        0x0106: ">L",
    },
}


def scan_tool_settings(broker: tuple[str, int], state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "scan_tool__doip": True,
        "scan_tool__doip_port": 0,
        "scan_tool__elm327": True,
        "scan_tool__elm327_port": 0,
        "homeassistant__discovery": False,
    }
    values.update(overrides)
    return service_settings(*broker, state_dir, **values)


def port_of(service: Service, transport: str) -> int:
    return int(service.scan_tool.endpoints[transport].rpartition(":")[2])


@contextlib.contextmanager
def uds_client(port: int) -> Iterator[Client]:
    doip = DoIPClient(  # type: ignore[no-untyped-call]  # doipclient has no annotations
        "127.0.0.1", 0x0740, tcp_port=port, client_logical_address=0x0E80
    )
    try:
        connector = DoIPClientUDSConnector(doip)  # type: ignore[no-untyped-call]
        with Client(connector, config=UDS_CONFIG) as client:  # type: ignore[arg-type]
            yield client
    finally:
        doip.close()  # type: ignore[no-untyped-call]


def data(response: Response | None) -> Any:
    """A positive response's decoded data (udsoncan raises on a negative one)."""
    assert response is not None
    return response.service_data


def confirmed(service: Service, *components: str) -> Callable[[], bool]:
    memory = service.daemon.diagnoser.memory

    def all_confirmed() -> bool:
        records = {r.component: r for r in memory.records.values()}
        return all(c in records and records[c].status == "confirmed" for c in components)

    return all_confirmed


def stored_memory(state_dir: Path, vehicle: str) -> FaultMemory:
    memory = FaultMemory(2, 2)
    StateStore(state_dir, vehicle).load(memory)
    return memory


async def test_udsoncan_over_doip_reads_the_fault_memory_and_clears_it(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = scan_tool_settings(broker, tmp_path / "state")
    service = Service(settings)
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        await asyncio.wait_for(service.scan_tool.started.wait(), 10)
        port = port_of(service, "doip")
        car = service.daemon.car
        car.inject("brake_left", "open_circuit")
        car.inject("battery", "dead_cell")
        await wait_until(confirmed(service, "brake_left", "battery"))
        await wait_until(lambda: service.publisher.backlog == 0)
        memory = service.daemon.diagnoser.memory

        def read() -> dict[str, Any]:
            with uds_client(port) as client:
                session = DiagnosticSessionControl.Session.extendedDiagnosticSession
                client.change_session(session)
                count = data(client.get_number_of_dtc_by_status_mask(0x08)).dtc_count
                dtcs = data(client.get_dtc_by_status_mask(0xFF)).dtcs
                lamp = client.get_dtc_snapshot_by_dtc_number(LAMP_DTC, record_number=0x01)
                battery = client.get_dtc_snapshot_by_dtc_number(BATTERY_DTC, record_number=0xFF)
                counters = client.get_dtc_extended_data_by_dtc_number(LAMP_DTC, record_number=0xFF)
                values = client.read_data_by_identifier([0xF190, 0x0101, 0x0102, 0x0103])
                return {
                    "count": count,
                    "dtcs": {d.id: d.status.get_byte_as_int() for d in dtcs},
                    "lamp": data(lamp).dtcs[0],
                    "battery": data(battery).dtcs[0],
                    "counters": data(counters).dtcs[0],
                    "values": data(values).values,
                }

        answers = await asyncio.to_thread(read)
        assert answers["count"] == 2
        assert set(answers["dtcs"]) == {LAMP_DTC, BATTERY_DTC}
        for status in answers["dtcs"].values():
            assert status & 0x08  # confirmedDTC
            assert status & 0x01  # testFailed: still broken
        # The snapshot is the freeze frame the memory took at confirmation, as ROOT/dtcs has it.
        published = {d["dtc"]: d for d in sub.json_on(f"{root}/dtcs")[-1]["dtcs"]}
        for answer, code in ((answers["lamp"], "B1200"), (answers["battery"], "B1211")):
            # udsoncan gives one Snapshot per DID of the record.
            assert {s.record_number for s in answer.snapshots} == {0x01}
            snapshot = {s.did: s.data for s in answer.snapshots}
            frame = published[code]["freeze_frame"]
            assert snapshot[0x0101] == (round(frame["bus_v"] * 1000),)
            assert snapshot[0x0102] == (round(frame["battery_soc_percent"]),)
            assert snapshot[0x0103] == (round(frame["engine_rpm"]),)
            assert snapshot[0x0104] == (round(frame["temperature_c"]) + 40,)
            assert snapshot[0x0105] == (2,)  # ignition run
        extended = {e.record_number: e.raw_data for e in answers["counters"].extended_data}
        assert extended == {0x01: b"\x01", 0x02: b"\x00"}  # confirmed once, not aged
        values = answers["values"]
        assert values[0xF190] == VIN
        assert 9_000 < values[0x0101][0] < 16_000  # mV
        assert 0 <= values[0x0102][0] <= 100  # %
        assert values[0x0103][0] > 500  # rpm, engine running

        seq_before = memory.seq

        def clear() -> None:
            with uds_client(port) as client:
                client.clear_dtc()

        await asyncio.to_thread(clear)
        # The same act as `clear_faults`: a fault_cleared event per fault, on MQTT, in order.
        events = f"{root}/events"
        await sub.wait_for(
            lambda: (
                sum(
                    e["type"] == "fault_cleared" and e["seq"] > seq_before
                    for e in sub.json_on(events)
                )
                >= 2
            ),
            what="the clear's fault_cleared events",
        )
        cleared = [e for e in sub.json_on(events) if e["seq"] > seq_before][:2]
        assert {(e["type"], e["component"]) for e in cleared} == {
            ("fault_cleared", "brake_left"),
            ("fault_cleared", "battery"),
        }
        assert [e["seq"] for e in cleared] == [seq_before + 1, seq_before + 2]
        # ...and the same saved state: the state file holds the memory after the clear.
        await wait_until(lambda: service.daemon.runner.store.last_saved_seq >= seq_before + 2)
        saved = stored_memory(settings.diagnostics.state_dir, settings.vehicle.id)
        assert saved.seq >= seq_before + 2
        assert not any(
            r.status == "confirmed" for r in saved.records.values()
        )  # still broken: pending again at most, never confirmed right after the clear


async def test_python_obd_over_tcp_reads_emission_codes_and_clears_them(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = scan_tool_settings(broker, tmp_path / "state")
    service = Service(settings)
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        await asyncio.wait_for(service.scan_tool.started.wait(), 10)
        port = port_of(service, "elm327")
        car = service.daemon.car
        car.inject("alternator", "no_output")  # P0620: emission-related, lights the MIL
        car.inject("brake_left", "open_circuit")  # B1200: a body code, UDS only
        await wait_until(confirmed(service, "alternator", "brake_left"))
        seq_before = service.daemon.diagnoser.memory.seq

        def read_and_clear() -> dict[str, Any]:
            connection = obd.OBD(f"socket://127.0.0.1:{port}", fast=False, timeout=2)
            try:
                assert connection.status() == obd.OBDStatus.CAR_CONNECTED
                status = connection.query(obd.commands.STATUS).value
                answers = {
                    "mil": status.MIL,
                    "dtc_count": status.DTC_count,
                    "codes": [code for code, _ in connection.query(obd.commands.GET_DTC).value],
                    "rpm": connection.query(obd.commands.RPM).value.magnitude,
                    "volts": connection.query(obd.commands.CONTROL_MODULE_VOLTAGE).value.magnitude,
                    "elm_volts": connection.query(obd.commands.ELM_VOLTAGE).value.magnitude,
                    "vin": connection.query(obd.commands.VIN).value,
                }
                connection.query(obd.commands.CLEAR_DTC)
                return answers
            finally:
                connection.close()

        answers = await asyncio.to_thread(read_and_clear)
        assert answers["mil"] is True
        assert answers["dtc_count"] == 1
        assert answers["codes"] == ["P0620"]  # the lamp's B code is not emission-related
        assert answers["rpm"] > 500
        assert 9.0 < answers["volts"] < 16.0
        assert 9.0 < answers["elm_volts"] < 16.0
        vin = answers["vin"]
        assert (vin.decode() if isinstance(vin, bytes | bytearray) else vin) == VIN
        events = f"{root}/events"
        await sub.wait_for(
            lambda: (
                {
                    e["component"]
                    for e in sub.json_on(events)
                    if e["type"] == "fault_cleared" and e["seq"] > seq_before
                }
                >= {"alternator", "brake_left"}
            ),
            what="fault_cleared for both faults after the OBD-II clear (mode 04)",
        )


async def test_a_port_in_use_is_a_reported_problem_and_is_retried(
    broker: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "RETRY_S", 0.2)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    settings = scan_tool_settings(
        broker, tmp_path / "state", scan_tool__doip_port=port, scan_tool__elm327=False
    )
    service = Service(settings)
    root = service.publisher.topics.root
    try:
        async with subscribed(*broker, f"{root}/#") as sub, running(service):
            status = f"{root}/status"
            await sub.wait_for(
                lambda: any(
                    any("scan tool doip" in p for p in s["problems"]) for s in sub.json_on(status)
                ),
                what="the scan-tool problem in ROOT/status",
            )
            # The daemon diagnoses and says it is online all the same.
            cycles = service.daemon.diagnoser.cycle
            await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
            assert sub.on(f"{root}/availability")[-1] == b"online"
            assert "doip" not in service.scan_tool.endpoints
            taken.close()
            await wait_until(lambda: "doip" in service.scan_tool.endpoints)
            assert service.scan_tool.problems() == []
            await sub.wait_for(
                lambda: sub.json_on(status)[-1]["problems"] == [],
                what="ROOT/status without the problem",
            )
    finally:
        taken.close()


async def test_a_can_bus_that_will_not_open_is_a_reported_problem(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = scan_tool_settings(
        broker,
        tmp_path / "state",
        scan_tool__isotp=True,
        scan_tool__can_interface="no-such-interface",
        scan_tool__elm327=False,
    )
    service = Service(settings)
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        await asyncio.wait_for(service.scan_tool.started.wait(), 10)
        assert "doip" in service.scan_tool.endpoints  # the others serve all the same
        [problem] = service.scan_tool.problems()
        assert problem.startswith("scan tool isotp: ")
        assert "no-such-interface" in problem
        status = f"{root}/status"
        await sub.wait_for(
            lambda: any(s["problems"] == [problem] for s in sub.json_on(status)),
            what="the bus problem in ROOT/status",
        )
        assert sub.json_on(status)[-1]["state_saved"] is True  # about the state, not the bus
        cycles = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 3)
        assert sub.on(f"{root}/availability")[-1] == b"online"


async def test_udsoncan_over_isotp_from_another_process_reads_and_clears(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    group = f"239.74.{random.randrange(256)}.{random.randrange(1, 255)}"  # this test's own bus
    settings = scan_tool_settings(
        broker,
        tmp_path / "state",
        scan_tool__isotp=True,
        scan_tool__can_channel=group,
        scan_tool__doip=False,
        scan_tool__elm327=False,
    )
    service = Service(settings)
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        await asyncio.wait_for(service.scan_tool.started.wait(), 10)
        assert "isotp" in service.scan_tool.endpoints
        service.daemon.car.inject("brake_left", "open_circuit")
        await wait_until(confirmed(service, "brake_left"))
        seq_before = service.daemon.diagnoser.memory.seq
        dtcs, cleared = await run_isotp_tester(group, DEFAULT_PORT, "dtcs", "clear")
        statuses = dict(dtcs)
        assert statuses[LAMP_DTC] & 0x09 == 0x09  # confirmedDTC and testFailed
        assert cleared is True
        await sub.wait_for(
            lambda: any(
                e["type"] == "fault_cleared"
                and e["component"] == "brake_left"
                and e["seq"] == seq_before + 1
                for e in sub.json_on(f"{root}/events")
            ),
            what="fault_cleared after the clear over ISO-TP",
        )
