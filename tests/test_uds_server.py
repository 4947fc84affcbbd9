"""The UDS server (ISO 14229-1), pure: request bytes in, response bytes out, no transport.

Positive responses are decoded with udsoncan's own interpreters (and, once, by a stock udsoncan
`Client` with the configuration the README gives), never with a decoder of ours. The views come
from the pure core driving the simulated car, or are built by hand where a test needs a state the
car does not reach quickly (a counter past 255, a freeze frame with values missing).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from udsoncan import AsciiCodec, Dtc
from udsoncan.client import Client
from udsoncan.configs import default_client_config
from udsoncan.connections import QueueConnection
from udsoncan.Response import Response
from udsoncan.services.ClearDiagnosticInformation import ClearDiagnosticInformation
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl
from udsoncan.services.ReadDataByIdentifier import ReadDataByIdentifier
from udsoncan.services.ReadDTCInformation import ReadDTCInformation

from carlightd.core.diagnoser import Telemetry
from carlightd.core.domain import Ignition, Kind
from carlightd.core.dtc import DTCEntry, DTCStatus, catalogue, lookup
from carlightd.core.memory import FreezeFrame, StoredDtc
from carlightd.outputs.scan_tool import records, uds
from carlightd.outputs.scan_tool.uds import (
    RESPONSE_PENDING_AFTER_S,
    RESPONSE_PENDING_EVERY_S,
    STATUS_AVAILABILITY_MASK,
    UdsServer,
    response_pending,
)
from carlightd.outputs.scan_tool.view import (
    ScanToolLink,
    VehicleView,
    supported_entries,
    view_of,
)
from tests.simulate import T0, Bench

Code = Response.Code
Report = ReadDTCInformation.Subfunction

# What a udsoncan user writes to decode this server (the README gives the same lines).
UDSONCAN_CONFIG: dict[str, Any] = {
    "dtc_snapshot_did_size": 2,
    "extended_data_size": 1,
    "data_identifiers": {
        0xF190: AsciiCodec(17),  # VIN
        0x0101: ">H",  # bus voltage, mV
        0x0102: "B",  # battery state of charge, %
        0x0103: ">H",  # engine speed, rpm
        0x0104: "B",  # battery temperature, °C + 40
        0x0105: "B",  # ignition: 0 off, 1 on, 2 run
        0x0106: ">L",  # when the snapshot was taken, s since 1970-01-01 UTC
    },
}

BRAKE_OPEN = lookup(Kind.LAMP, "open_circuit")  # B1200 0x13 -> 0x920013
HEADLAMP_SHORT = lookup(Kind.LAMP, "short_circuit")
DEAD_CELL = lookup(Kind.BATTERY, "dead_cell")
VIN = "CLDSMLT12V0000043"  # the default [vehicle] vin


# --- views and links ------------------------------------------------------------------------------


@cache
def car_view() -> VehicleView:
    """The pure core over the simulated car: brake_left open and a dead battery cell confirmed
    (each a DTC with a freeze frame), then headlamp_left shorted for one cycle (pending only)."""
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.car.inject("brake_left", "open_circuit")
    bench.car.inject("battery", "dead_cell")
    bench.run(40)
    bench.car.inject("headlamp_left", "short_circuit")
    report = bench.cycle()
    kinds = {Kind(component.kind) for component in bench.settings.components}
    return view_of(report, bench.settings.vehicle.vin, supported_entries(kinds))


def stored_of(view: VehicleView, entry: DTCEntry) -> StoredDtc:
    [stored] = [d for d in view.dtcs if (d.kind, d.failure) == (entry.kind, entry.failure)]
    return stored


@dataclass
class FakeLink:
    """A link whose view the test sets and whose clear it counts."""

    view: VehicleView
    clears: int = 0
    cleared: int = 3
    clear_error: Exception | None = None
    clear_gate: asyncio.Event | None = None
    in_clear: int = 0
    most_in_clear: int = 0
    views_read: int = 0
    view_error: Exception | None = None

    def read_view(self) -> VehicleView:
        self.views_read += 1
        if self.view_error is not None:
            raise self.view_error
        return self.view

    async def clear(self) -> int:
        self.clears += 1
        self.in_clear += 1
        self.most_in_clear = max(self.most_in_clear, self.in_clear)
        try:
            if self.clear_gate is not None:
                await self.clear_gate.wait()
            if self.clear_error is not None:
                raise self.clear_error
            return self.cleared
        finally:
            self.in_clear -= 1

    def link(self) -> ScanToolLink:
        return ScanToolLink(view=self.read_view, clear=self.clear)


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Ecu:
    """A server over a fake link with a fake clock."""

    view: VehicleView = field(default_factory=car_view)
    fake: FakeLink = field(init=False)
    clock: FakeClock = field(default_factory=FakeClock)
    server: UdsServer = field(init=False)

    def __post_init__(self) -> None:
        self.fake = FakeLink(self.view)
        self.server = UdsServer(self.fake.link(), clock=self.clock)

    async def ask(self, hex_request: str) -> bytes | None:
        return await self.server.handle(bytes.fromhex(hex_request))

    async def positive(self, hex_request: str) -> Response:
        answer = await self.ask(hex_request)
        assert answer is not None
        response = Response.from_payload(answer)
        assert response.valid, response.invalid_reason
        assert response.positive, answer.hex()
        return response

    async def nrc(self, hex_request: str) -> int:
        answer = await self.ask(hex_request)
        assert answer is not None
        assert len(answer) == 3, answer.hex()
        assert answer[:2] == bytes((0x7F, bytes.fromhex(hex_request)[0])), answer.hex()
        return answer[2]


def dtc_hex(entry: DTCEntry) -> str:
    return f"{entry.uds_code:06x}"


async def read_dtcs(ecu: Ecu, hex_request: str) -> ReadDTCInformation.ResponseData:
    response = await ecu.positive(hex_request)
    report = bytes.fromhex(hex_request)[1]
    interpreted = ReadDTCInformation.interpret_response(
        response,
        report,
        extended_data_size=UDSONCAN_CONFIG["extended_data_size"],
        dtc_snapshot_did_size=UDSONCAN_CONFIG["dtc_snapshot_did_size"],
        didconfig=UDSONCAN_CONFIG["data_identifiers"],
    )
    assert interpreted.service_data.subfunction_echo == report
    return interpreted.service_data


async def read_dids(ecu: Ecu, *dids: int) -> dict[int, Any]:
    request = "22" + "".join(f"{did:04x}" for did in dids)
    response = await ecu.positive(request)
    interpreted = ReadDataByIdentifier.interpret_response(
        response, list(dids), UDSONCAN_CONFIG["data_identifiers"]
    )
    return {did: scalar(value) for did, value in interpreted.service_data.values.items()}


def did_snapshots(dtc: Dtc) -> list[Dtc.Snapshot]:
    """udsoncan's snapshots of a DTC read with 0x19 0x04 (one per DID)."""
    found = [snapshot for snapshot in dtc.snapshots if isinstance(snapshot, Dtc.Snapshot)]
    assert len(found) == len(dtc.snapshots)
    return found


def snapshot_values(dtc: Dtc) -> dict[int, Any]:
    values: dict[int, Any] = {}
    for snapshot in did_snapshots(dtc):
        assert snapshot.did is not None
        values[snapshot.did] = scalar(snapshot.data)
    return values


def scalar(decoded: Any) -> Any:
    """udsoncan decodes a struct-format DID to the tuple `struct.unpack` returns."""
    if isinstance(decoded, tuple):
        [value] = decoded
        return value
    return decoded


# --- 0x10 DiagnosticSessionControl, 0x3E TesterPresent --------------------------------------------


@pytest.mark.parametrize("session", [0x01, 0x03])
async def test_session_control_answers_with_p2_and_p2_star(session: int) -> None:
    ecu = Ecu()
    answer = await ecu.ask(f"10{session:02x}")
    assert answer == bytes((0x50, session, 0x00, 0x32, 0x01, 0xF4))
    assert answer is not None
    interpreted = DiagnosticSessionControl.interpret_response(Response.from_payload(answer))
    assert interpreted.service_data.session_echo == session
    assert interpreted.service_data.p2_server_max == pytest.approx(0.050)
    assert interpreted.service_data.p2_star_server_max == pytest.approx(5.0)
    assert ecu.server.session == session


async def test_session_control_with_the_suppress_bit_switches_without_an_answer() -> None:
    ecu = Ecu()
    assert await ecu.ask("1083") is None
    assert ecu.server.session == 0x03
    assert await ecu.ask("1081") is None
    assert ecu.server.session == 0x01


@pytest.mark.parametrize("request_hex", ["1000", "1002", "1004", "1040", "107f", "1082", "10ff"])
async def test_other_sessions_are_refused_even_with_the_suppress_bit(request_hex: str) -> None:
    ecu = Ecu()
    assert await ecu.nrc(request_hex) == Code.SubFunctionNotSupported
    assert ecu.server.session == 0x01


@pytest.mark.parametrize("request_hex", ["10", "100300", "10010000"])
async def test_session_control_of_the_wrong_length(request_hex: str) -> None:
    assert await Ecu().nrc(request_hex) == Code.IncorrectMessageLengthOrInvalidFormat


async def test_the_extended_session_ends_after_s3_without_a_request() -> None:
    ecu = Ecu()
    await ecu.positive("1003")
    ecu.clock.now += 4.9
    assert ecu.server.session == 0x03
    assert await ecu.ask("3e80") is None  # a silent tester present keeps it open
    ecu.clock.now += 4.9
    assert ecu.server.session == 0x03
    await ecu.positive("1902ff")  # so does any other request
    ecu.clock.now += 5.0
    assert ecu.server.session == 0x01
    # Back in the default session, everything is still served.
    await ecu.positive("1902ff")
    assert ecu.server.session == 0x01


async def test_a_client_toggling_sessions_does_not_flood_the_log() -> None:
    ecu = Ecu()
    with capture_logs() as logged:
        for _ in range(100):
            await ecu.positive("1003")
            await ecu.positive("1001")
    assert len([line for line in logged if line["event"] == "uds_session"]) == 1
    ecu.clock.now += 11
    with capture_logs() as logged:
        await ecu.positive("1003")
    [line] = [line for line in logged if line["event"] == "uds_session"]
    assert line["times"] == 200


async def test_the_default_session_does_not_time_out() -> None:
    ecu = Ecu()
    ecu.clock.now += 3600
    assert ecu.server.session == 0x01
    assert (await ecu.positive("1001")).data == bytes.fromhex("01003201f4")


async def test_tester_present() -> None:
    ecu = Ecu()
    assert await ecu.ask("3e00") == bytes((0x7E, 0x00))
    assert await ecu.ask("3e80") is None
    # Negative responses are never suppressed (physical addressing).
    assert await ecu.nrc("3e01") == Code.SubFunctionNotSupported
    assert await ecu.nrc("3e81") == Code.SubFunctionNotSupported
    assert await ecu.nrc("3e") == Code.IncorrectMessageLengthOrInvalidFormat
    assert await ecu.nrc("3e0000") == Code.IncorrectMessageLengthOrInvalidFormat
    assert await ecu.nrc("3e8000") == Code.IncorrectMessageLengthOrInvalidFormat


# --- 0x19 ReadDTCInformation ----------------------------------------------------------------------


def stored_codes(view: VehicleView, mask: int = 0xFF) -> dict[int, int]:
    """DTC -> status, as the server should report them (one DTC per catalogue entry)."""
    codes: dict[int, int] = {}
    for stored in view.dtcs:
        code = lookup(stored.kind, stored.failure).uds_code
        codes[code] = codes.get(code, 0) | stored.dtc_status & STATUS_AVAILABILITY_MASK
    return {code: status for code, status in codes.items() if status & mask}


def test_the_car_view_has_what_the_tests_need() -> None:
    view = car_view()
    assert stored_of(view, BRAKE_OPEN).freeze_frame is not None
    assert stored_of(view, DEAD_CELL).freeze_frame is not None
    assert stored_of(view, BRAKE_OPEN).dtc_status & DTCStatus.CONFIRMED_DTC
    pending = stored_of(view, HEADLAMP_SHORT)
    assert pending.freeze_frame is None
    assert pending.occurrences == 0
    assert not pending.dtc_status & DTCStatus.CONFIRMED_DTC
    assert view.telemetry is not None


def test_the_availability_mask_is_every_bit_the_memory_maintains() -> None:
    # testNotCompletedSinceLastClear (0x10) is the one bit the fault memory never sets.
    assert STATUS_AVAILABILITY_MASK == 0xEF


@pytest.mark.parametrize("mask", [0xFF, 0x08, 0x04, 0x01, 0x10, 0x00])
async def test_number_of_dtcs_by_status_mask(mask: int) -> None:
    ecu = Ecu()
    data = await read_dtcs(ecu, f"1901{mask:02x}")
    assert data.status_availability is not None
    assert data.status_availability.get_byte_as_int() == STATUS_AVAILABILITY_MASK
    assert data.dtc_format == Dtc.Format.ISO14229_1
    assert data.dtc_count == len(stored_codes(ecu.view, mask))


async def test_number_of_confirmed_dtcs_counts_the_two_confirmed_faults() -> None:
    data = await read_dtcs(Ecu(), "190108")
    assert data.dtc_count == 2


@pytest.mark.parametrize("mask", [0xFF, 0x08, 0x04, 0x10, 0x00])
async def test_dtcs_by_status_mask(mask: int) -> None:
    ecu = Ecu()
    data = await read_dtcs(ecu, f"1902{mask:02x}")
    assert data.status_availability is not None
    assert data.status_availability.get_byte_as_int() == STATUS_AVAILABILITY_MASK
    assert {dtc.id: dtc.status.get_byte_as_int() for dtc in data.dtcs} == stored_codes(
        ecu.view, mask
    )
    assert [dtc.id for dtc in data.dtcs] == sorted(dtc.id for dtc in data.dtcs)


async def test_dtcs_by_status_mask_lists_the_confirmed_and_the_pending() -> None:
    data = await read_dtcs(Ecu(), "1902ff")
    by_id = {dtc.id: dtc.status for dtc in data.dtcs}
    assert set(by_id) == {BRAKE_OPEN.uds_code, DEAD_CELL.uds_code, HEADLAMP_SHORT.uds_code}
    assert by_id[BRAKE_OPEN.uds_code].confirmed
    assert by_id[BRAKE_OPEN.uds_code].warning_indicator_requested
    assert by_id[HEADLAMP_SHORT.uds_code].pending
    assert not by_id[HEADLAMP_SHORT.uds_code].confirmed


async def test_supported_dtcs_are_every_catalogue_entry_of_the_car() -> None:
    ecu = Ecu()
    data = await read_dtcs(ecu, "190a")
    assert data.status_availability is not None
    assert data.status_availability.get_byte_as_int() == STATUS_AVAILABILITY_MASK
    reported = {dtc.id: dtc.status.get_byte_as_int() for dtc in data.dtcs}
    stored = stored_codes(ecu.view)
    assert set(reported) == {entry.uds_code for entry in ecu.view.supported}
    assert len(data.dtcs) == len(ecu.view.supported)
    for code, status in reported.items():
        assert status == stored.get(code, 0)


async def test_snapshot_record_is_the_freeze_frame() -> None:
    ecu = Ecu()
    frame = stored_of(ecu.view, BRAKE_OPEN).freeze_frame
    assert frame is not None
    for number in ("01", "ff"):
        data = await read_dtcs(ecu, f"1904{dtc_hex(BRAKE_OPEN)}{number}")
        [dtc] = data.dtcs
        assert dtc.id == BRAKE_OPEN.uds_code
        assert dtc.status.get_byte_as_int() == stored_codes(ecu.view)[BRAKE_OPEN.uds_code]
        values = snapshot_values(dtc)
        assert {snapshot.record_number for snapshot in did_snapshots(dtc)} == {0x01}
        assert values == {
            0x0101: round(frame.bus_v * 1000) if frame.bus_v is not None else 0xFFFF,
            0x0102: round(frame.battery_soc_percent or 0),
            0x0103: round(frame.engine_rpm or 0),
            0x0104: round((frame.temperature_c or 0) + 40),
            0x0105: 2,  # run
            0x0106: int(frame.at.timestamp()),
        }


async def test_snapshot_values_not_available_are_all_ones() -> None:
    frame = FreezeFrame(
        at=datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC),
        ignition=Ignition.OFF,
        engine_rpm=None,
        bus_v=None,
        battery_soc_percent=None,
        temperature_c=None,
    )
    ecu = Ecu(view=hand_view(stored_dtc("brake_left", BRAKE_OPEN, freeze_frame=frame)))
    data = await read_dtcs(ecu, f"1904{dtc_hex(BRAKE_OPEN)}01")
    values = snapshot_values(data.dtcs[0])
    assert values == {
        0x0101: 0xFFFF,
        0x0102: 0xFF,
        0x0103: 0xFFFF,
        0x0104: 0xFF,
        0x0105: 0,  # off
        0x0106: int(frame.at.timestamp()),
    }


async def test_snapshot_values_out_of_range_are_clamped_below_not_available() -> None:
    frame = FreezeFrame(
        at=datetime(1960, 1, 1, tzinfo=UTC),
        ignition=Ignition.ON,
        engine_rpm=1e9,
        bus_v=-3.0,
        battery_soc_percent=100.4,
        temperature_c=-60.0,
    )
    ecu = Ecu(view=hand_view(stored_dtc("brake_left", BRAKE_OPEN, freeze_frame=frame)))
    data = await read_dtcs(ecu, f"1904{dtc_hex(BRAKE_OPEN)}ff")
    values = snapshot_values(data.dtcs[0])
    assert values == {
        0x0101: 0,
        0x0102: 100,
        0x0103: 0xFFFE,
        0x0104: 0,
        0x0105: 1,  # on
        0x0106: 0,
    }


async def test_a_pending_dtc_has_no_snapshot_record() -> None:
    ecu = Ecu()
    for number in ("01", "ff"):
        data = await read_dtcs(ecu, f"1904{dtc_hex(HEADLAMP_SHORT)}{number}")
        [dtc] = data.dtcs
        assert dtc.id == HEADLAMP_SHORT.uds_code
        assert dtc.status.pending
        assert dtc.snapshots == []


async def test_a_supported_dtc_with_nothing_stored_answers_with_status_zero() -> None:
    ecu = Ecu()
    entry = lookup(Kind.LAMP, "degraded")
    assert entry in ecu.view.supported
    snapshot = await read_dtcs(ecu, f"1904{dtc_hex(entry)}ff")
    assert [(d.id, d.status.get_byte_as_int(), d.snapshots) for d in snapshot.dtcs] == [
        (entry.uds_code, 0, [])
    ]
    extended = await read_dtcs(ecu, f"1906{dtc_hex(entry)}ff")
    assert [(d.id, d.status.get_byte_as_int(), d.extended_data) for d in extended.dtcs] == [
        (entry.uds_code, 0, [])
    ]


async def test_extended_data_records_are_the_occurrence_and_aging_counters() -> None:
    ecu = Ecu()
    stored = stored_of(ecu.view, BRAKE_OPEN)
    data = await read_dtcs(ecu, f"1906{dtc_hex(BRAKE_OPEN)}ff")
    [dtc] = data.dtcs
    assert dtc.status.get_byte_as_int() == stored_codes(ecu.view)[BRAKE_OPEN.uds_code]
    assert [(e.record_number, e.raw_data) for e in dtc.extended_data] == [
        (0x01, bytes((stored.occurrences,))),
        (0x02, bytes((stored.aging_counter,))),
    ]
    [only_aging] = (await read_dtcs(ecu, f"1906{dtc_hex(BRAKE_OPEN)}02")).dtcs
    assert [(e.record_number, e.raw_data) for e in only_aging.extended_data] == [
        (0x02, bytes((stored.aging_counter,)))
    ]
    [pending] = (await read_dtcs(ecu, f"1906{dtc_hex(HEADLAMP_SHORT)}01")).dtcs
    assert [(e.record_number, e.raw_data) for e in pending.extended_data] == [(0x01, b"\x00")]


async def test_extended_data_counters_saturate_at_255() -> None:
    ecu = Ecu(
        view=hand_view(stored_dtc("brake_left", BRAKE_OPEN, occurrences=300, aging_counter=256))
    )
    [dtc] = (await read_dtcs(ecu, f"1906{dtc_hex(BRAKE_OPEN)}ff")).dtcs
    assert [(e.record_number, e.raw_data) for e in dtc.extended_data] == [
        (0x01, b"\xff"),
        (0x02, b"\xff"),
    ]


async def test_two_parts_with_one_dtc_read_as_one_dtc() -> None:
    early = FreezeFrame(T0, Ignition.RUN, 800.0, 14.1, 80.0, 20.0)
    late = replace(early, at=T0 + timedelta(minutes=5), bus_v=12.0)
    left = stored_dtc(
        "brake_left", BRAKE_OPEN, status=0x2F, occurrences=2, aging_counter=0, freeze_frame=late
    )
    right = stored_dtc(
        "brake_right", BRAKE_OPEN, status=0x28, occurrences=1, aging_counter=7, freeze_frame=early
    )
    ecu = Ecu(view=hand_view(left, right))
    listed = await read_dtcs(ecu, "1902ff")
    assert [(d.id, d.status.get_byte_as_int()) for d in listed.dtcs] == [
        (BRAKE_OPEN.uds_code, 0x2F)
    ]
    assert (await read_dtcs(ecu, "1901ff")).dtc_count == 1
    [dtc] = (await read_dtcs(ecu, f"1904{dtc_hex(BRAKE_OPEN)}01")).dtcs
    values = snapshot_values(dtc)
    assert values[0x0101] == 14100  # the earliest freeze frame
    [dtc] = (await read_dtcs(ecu, f"1906{dtc_hex(BRAKE_OPEN)}ff")).dtcs
    assert [e.raw_data for e in dtc.extended_data] == [b"\x03", b"\x00"]


@pytest.mark.parametrize(
    "report", [0x00, 0x03, 0x05, 0x07, 0x0B, 0x14, 0x42, 0x55, 0x7F, 0x81, 0x82, 0x8A, 0xFF]
)
async def test_unsupported_report_types_are_refused(report: int) -> None:
    # 0x81, 0x82, 0x8A: ReadDTCInformation has no suppressPosRspMsgIndicationBit.
    assert await Ecu().nrc(f"19{report:02x}ff") == Code.SubFunctionNotSupported


@pytest.mark.parametrize("report", ["04", "06"])
async def test_a_dtc_the_car_does_not_support_is_out_of_range(report: str) -> None:
    ecu = Ecu()
    assert await ecu.nrc(f"19{report}123456ff") == Code.RequestOutOfRange
    assert await ecu.nrc(f"19{report}000000ff") == Code.RequestOutOfRange
    # A catalogue entry of a kind this car lacks is not supported either.
    only_lamps = replace(ecu.view, supported=supported_entries({Kind.LAMP}), dtcs=())
    other = next(entry for entry in catalogue().values() if entry.kind == Kind.ALTERNATOR)
    assert await Ecu(view=only_lamps).nrc(f"19{report}{dtc_hex(other)}ff") == (
        Code.RequestOutOfRange
    )


@pytest.mark.parametrize("number", ["00", "02", "10", "fe"])
async def test_unknown_snapshot_record_numbers_are_out_of_range(number: str) -> None:
    assert await Ecu().nrc(f"1904{dtc_hex(BRAKE_OPEN)}{number}") == Code.RequestOutOfRange


@pytest.mark.parametrize("number", ["00", "03", "90", "fe"])
async def test_unknown_extended_data_record_numbers_are_out_of_range(number: str) -> None:
    assert await Ecu().nrc(f"1906{dtc_hex(BRAKE_OPEN)}{number}") == Code.RequestOutOfRange


@pytest.mark.parametrize(
    "request_hex",
    [
        *("19", "1901", "1901ff00", "1902", "1902ffff", "190a00"),
        *("1904", "1904920013", "1904920013ff00", "1906", "1906920013", "190692001301ff"),
    ],
)
async def test_read_dtc_information_of_the_wrong_length(request_hex: str) -> None:
    assert await Ecu().nrc(request_hex) == Code.IncorrectMessageLengthOrInvalidFormat


# --- 0x14 ClearDiagnosticInformation --------------------------------------------------------------


async def test_clear_calls_the_link_once_and_answers_54() -> None:
    ecu = Ecu()
    with capture_logs() as logged:
        assert await ecu.ask("14ffffff") == b"\x54"
    assert ecu.fake.clears == 1
    assert [line["event"] for line in logged] == ["uds_clear"]
    assert logged[0]["cleared"] == ecu.fake.cleared


@pytest.mark.parametrize("group", ["ffff33", "ffffd0", "fffffe", "000000", "920013", "ffff00"])
async def test_clearing_any_other_group_is_out_of_range(group: str) -> None:
    ecu = Ecu()
    assert await ecu.nrc(f"14{group}") == Code.RequestOutOfRange
    assert ecu.fake.clears == 0


@pytest.mark.parametrize("memory", ["00", "01", "ff"])
async def test_clearing_a_user_defined_memory_is_out_of_range(memory: str) -> None:
    # ISO 14229-1:2020's MemorySelection names a user-defined memory; this server has none.
    ecu = Ecu()
    assert await ecu.nrc(f"14ffffff{memory}") == Code.RequestOutOfRange
    assert ecu.fake.clears == 0


@pytest.mark.parametrize("request_hex", ["14", "14ff", "14ffff", "14ffffff0000"])
async def test_clear_of_the_wrong_length(request_hex: str) -> None:
    ecu = Ecu()
    assert await ecu.nrc(request_hex) == Code.IncorrectMessageLengthOrInvalidFormat
    assert ecu.fake.clears == 0


async def test_a_clear_that_fails_is_conditions_not_correct_and_logged() -> None:
    ecu = Ecu()
    ecu.fake.clear_error = OSError("state file not writable")
    with capture_logs() as logged:
        assert await ecu.nrc("14ffffff") == Code.ConditionsNotCorrect
        assert await ecu.nrc("14ffffff") == Code.ConditionsNotCorrect
    assert ecu.fake.clears == 2
    failures = [line for line in logged if line["event"] == "uds_clear_failed"]
    assert len(failures) == 1  # the second, a moment later, is counted, not logged again
    assert "state file not writable" in failures[0]["error"]
    ecu.clock.now += 61
    with capture_logs() as logged:
        assert await ecu.nrc("14ffffff") == Code.ConditionsNotCorrect
    [failure] = [line for line in logged if line["event"] == "uds_clear_failed"]
    assert failure["times"] == 2


async def test_concurrent_clears_run_one_after_the_other() -> None:
    ecu = Ecu()
    ecu.fake.clear_gate = asyncio.Event()
    first = asyncio.create_task(ecu.ask("14ffffff"))
    second = asyncio.create_task(ecu.ask("14ffffff"))
    while ecu.fake.clears == 0:
        await asyncio.sleep(0)
    # While a clear is under way the server still answers other requests.
    assert await ecu.ask("3e00") == b"\x7e\x00"
    ecu.fake.clear_gate.set()
    assert await first == b"\x54"
    assert await second == b"\x54"
    assert ecu.fake.clears == 2
    assert ecu.fake.most_in_clear == 1


async def test_clear_through_the_real_fault_memory() -> None:
    """A link over the bench's own fault memory: the stored DTCs go, and what is still failing
    comes back pending (not confirmed) on the next cycle."""
    bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
    bench.car.inject("brake_left", "open_circuit")
    kinds = {Kind(component.kind) for component in bench.settings.components}
    supported = supported_entries(kinds)
    latest = [view_of(bench.run(20), VIN, supported)]

    async def clear() -> int:
        return len(bench.memory.clear(bench.now))

    server = UdsServer(ScanToolLink(view=lambda: latest[-1], clear=clear), clock=FakeClock())
    ecu = Ecu()
    ecu.server = server
    before = await read_dtcs(ecu, "1902ff")
    assert [dtc.id for dtc in before.dtcs] == [BRAKE_OPEN.uds_code]
    assert await server.handle(b"\x14\xff\xff\xff") == b"\x54"
    assert bench.memory.dtcs() == []
    latest.append(view_of(bench.cycle(), VIN, supported))
    [again] = (await read_dtcs(ecu, "1902ff")).dtcs
    assert again.status.pending
    assert not again.status.confirmed
    [dtc] = (await read_dtcs(ecu, f"1906{dtc_hex(BRAKE_OPEN)}01")).dtcs
    assert dtc.extended_data[0].raw_data == b"\x00"  # no occurrence since the clear


# --- 0x22 ReadDataByIdentifier --------------------------------------------------------------------


def telemetry(**values: Any) -> Telemetry:
    base: dict[str, Any] = {
        "ignition": Ignition.RUN,
        "engine_rpm": 812.4,
        "bus_v": 14.2316,
        "battery": None,
        "alternator": None,
        "battery_soc": 0.876,
    }
    base.update(values)
    return Telemetry(**base)


async def test_read_the_vin() -> None:
    assert await read_dids(Ecu(), 0xF190) == {0xF190: VIN}


async def test_read_the_live_values() -> None:
    ecu = Ecu(view=hand_view(telemetry=telemetry()))
    assert await read_dids(ecu, 0x0101, 0x0102, 0x0103, 0xF190) == {
        0x0101: 14232,
        0x0102: 88,
        0x0103: 812,
        0xF190: VIN,
    }


async def test_read_the_live_values_of_the_simulated_car() -> None:
    ecu = Ecu()
    assert ecu.view.telemetry is not None
    values = await read_dids(ecu, 0x0101, 0x0103)
    assert ecu.view.telemetry.bus_v is not None
    assert values[0x0101] == round(ecu.view.telemetry.bus_v * 1000)
    assert values[0x0103] == round(ecu.view.telemetry.engine_rpm or 0)


async def test_a_did_asked_twice_is_answered_twice() -> None:
    ecu = Ecu(view=hand_view(telemetry=telemetry()))
    answer = await ecu.ask("2201030103")
    assert answer == bytes.fromhex("62") + 2 * bytes.fromhex("0103032c")


async def test_unsupported_dids_are_left_out_if_another_is_supported() -> None:
    ecu = Ecu(view=hand_view(telemetry=telemetry()))
    assert await ecu.ask("22f18c0103") == bytes.fromhex("620103032c")
    assert await ecu.nrc("22f18c") == Code.RequestOutOfRange
    assert await ecu.nrc("220104") == Code.RequestOutOfRange  # a snapshot-only DID
    assert await ecu.nrc("2200000106ffff") == Code.RequestOutOfRange


@pytest.mark.parametrize(
    ("values", "did"),
    [
        ({"bus_v": None}, 0x0101),
        ({"battery_soc": None}, 0x0102),
        ({"engine_rpm": None}, 0x0103),
        ({"bus_v": float("nan")}, 0x0101),
    ],
)
async def test_a_value_not_measured_is_conditions_not_correct(
    values: dict[str, Any], did: int
) -> None:
    ecu = Ecu(view=hand_view(telemetry=telemetry(**values)))
    assert await ecu.nrc(f"22{did:04x}") == Code.ConditionsNotCorrect
    assert await ecu.nrc(f"22f190{did:04x}") == Code.ConditionsNotCorrect


@pytest.mark.parametrize("did", [0x0101, 0x0102, 0x0103])
async def test_before_the_first_cycle_live_values_are_not_available(did: int) -> None:
    ecu = Ecu(view=hand_view(telemetry=None))
    assert await ecu.nrc(f"22{did:04x}") == Code.ConditionsNotCorrect
    assert await read_dids(ecu, 0xF190) == {0xF190: VIN}  # the VIN is


async def test_live_values_are_clamped_into_their_type() -> None:
    high = Ecu(view=hand_view(telemetry=telemetry(bus_v=80.0, engine_rpm=1e7, battery_soc=3.0)))
    assert await read_dids(high, 0x0101, 0x0102, 0x0103) == {
        0x0101: 0xFFFE,
        0x0102: 0xFE,
        0x0103: 0xFFFE,
    }
    low = Ecu(view=hand_view(telemetry=telemetry(bus_v=-1.0, engine_rpm=-5.0, battery_soc=-0.2)))
    assert await read_dids(low, 0x0101, 0x0102, 0x0103) == {0x0101: 0, 0x0102: 0, 0x0103: 0}


@pytest.mark.parametrize(
    "request_hex", ["22", "22f1", "22f19001", "22f190010101", "22" + "0101" * 9, "22" + "f190" * 20]
)
async def test_read_data_by_identifier_of_the_wrong_length(request_hex: str) -> None:
    assert await Ecu().nrc(request_hex) == Code.IncorrectMessageLengthOrInvalidFormat


async def test_eight_dids_in_one_request_are_served() -> None:
    ecu = Ecu(view=hand_view(telemetry=telemetry()))
    response = await ecu.positive("22" + "0101" * 8)
    assert response.data == bytes.fromhex("01013798") * 8


# --- everything else ------------------------------------------------------------------------------


SERVED = {0x10, 0x14, 0x19, 0x22, 0x3E}


@pytest.mark.parametrize("sid", sorted(set(range(256)) - SERVED))
async def test_every_other_service_is_not_supported(sid: int) -> None:
    ecu = Ecu()
    assert await ecu.nrc(f"{sid:02x}") == Code.ServiceNotSupported
    assert await ecu.nrc(f"{sid:02x}0102030405") == Code.ServiceNotSupported


def test_the_response_pending_a_transport_sends_for_a_slow_answer() -> None:
    response = Response.from_payload(response_pending(b"\x14\xff\xff\xff"))
    assert response.valid
    assert not response.positive
    assert response.service is ClearDiagnosticInformation
    assert response.code == Code.RequestCorrectlyReceived_ResponsePending
    assert RESPONSE_PENDING_AFTER_S < 0.050  # P2server, as 0x10 announces it
    assert RESPONSE_PENDING_AFTER_S < RESPONSE_PENDING_EVERY_S < 5.0


async def test_an_empty_request_gets_no_answer() -> None:
    assert await Ecu().server.handle(b"") is None


async def test_a_failure_inside_is_a_general_reject_logged_once_in_a_while() -> None:
    ecu = Ecu()
    ecu.fake.view_error = RuntimeError("boom")
    with capture_logs() as logged:
        for _ in range(100):
            assert await ecu.nrc("1902ff") == Code.GeneralReject
    failures = [line for line in logged if line["event"] == "uds_request_failed"]
    assert len(failures) == 1
    assert "boom" in failures[0]["error"]
    ecu.fake.view_error = None
    await ecu.positive("1902ff")


# Every valid request this server answers positively (fixed-length ones first).
VALID_REQUESTS = [
    "1001",
    "1003",
    "3e00",
    "1901ff",
    "1902ff",
    "190a",
    f"1904{dtc_hex(BRAKE_OPEN)}01",
    f"1904{dtc_hex(BRAKE_OPEN)}ff",
    f"1906{dtc_hex(BRAKE_OPEN)}01",
    f"1906{dtc_hex(BRAKE_OPEN)}ff",
    "14ffffff",
    "22f190",
    "220101",
    "22f19001010102",
]


@pytest.mark.parametrize("request_hex", VALID_REQUESTS)
async def test_every_valid_request_is_answered_positively(request_hex: str) -> None:
    ecu = Ecu()
    response = await ecu.positive(request_hex)
    assert response.service is not None
    assert response.service.request_id() == bytes.fromhex(request_hex)[0]


@pytest.mark.parametrize("request_hex", VALID_REQUESTS)
async def test_every_truncated_valid_request_is_the_wrong_length(request_hex: str) -> None:
    ecu = Ecu()
    request = bytes.fromhex(request_hex)
    for length in range(1, len(request)):
        truncated = request[:length].hex()
        if request[0] == 0x22 and length >= 3 and length % 2:  # fewer DIDs: still valid
            continue
        assert await ecu.nrc(truncated) == Code.IncorrectMessageLengthOrInvalidFormat, truncated
    assert ecu.fake.clears == 0


@pytest.mark.parametrize("request_hex", VALID_REQUESTS)
async def test_every_valid_request_with_a_byte_more_is_refused(request_hex: str) -> None:
    ecu = Ecu()
    expected = Code.IncorrectMessageLengthOrInvalidFormat
    if request_hex == "14ffffff":
        expected = Code.RequestOutOfRange  # a MemorySelection byte
    assert await ecu.nrc(request_hex + "00") == expected
    assert ecu.fake.clears == 0


# --- hostile bytes --------------------------------------------------------------------------------


def check_well_formed(request: bytes, answer: bytes | None) -> None:
    """None, a 7F SID NRC of three bytes, or a positive response to this service."""
    if answer is None:
        assert request == b"" or (request[0] in (0x10, 0x3E) and request[1] & 0x80), request
        return
    assert answer, request
    if answer[0] == 0x7F:
        assert len(answer) == 3
        assert answer[1] == request[0]
        assert answer[2] in {
            Code.GeneralReject,
            Code.ServiceNotSupported,
            Code.SubFunctionNotSupported,
            Code.IncorrectMessageLengthOrInvalidFormat,
            Code.ConditionsNotCorrect,
            Code.RequestOutOfRange,
        }
        assert answer[2] != Code.GeneralReject, request  # nothing inside failed
        return
    assert answer[0] == request[0] + 0x40
    response = Response.from_payload(answer)
    assert response.valid
    assert response.positive


def answer_of(request: bytes) -> bytes | None:
    ecu = Ecu()
    ecu.fake.clears = 0
    answer = asyncio.run(ecu.server.handle(request))
    assert ecu.fake.clears <= 1
    return answer


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_are_answered_well_formed(request: bytes) -> None:
    check_well_formed(request, answer_of(request))


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    request = bytearray(bytes.fromhex(draw(st.sampled_from(VALID_REQUESTS))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "append", "cut"]))
        position = draw(st.integers(0, max(0, len(request) - 1)))
        if action == "flip" and request:
            request[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and request:
            request[position] = draw(st.integers(0, 255))
        elif action == "insert":
            request.insert(position, draw(st.integers(0, 255)))
        elif action == "delete" and request:
            del request[position]
        elif action == "append":
            request.extend(draw(st.binary(min_size=1, max_size=8)))
        elif action == "cut":
            del request[position:]
    return bytes(request)


@settings(max_examples=400, deadline=None)
@given(mutated_requests())
def test_mutated_valid_requests_are_answered_well_formed(request: bytes) -> None:
    check_well_formed(request, answer_of(request))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=20))
def test_a_stream_of_hostile_requests_leaves_the_server_serving(requests: list[bytes]) -> None:
    async def run() -> None:
        ecu = Ecu()
        for request in requests:
            check_well_formed(request, await ecu.server.handle(request))
        assert await ecu.ask("3e00") == b"\x7e\x00"
        await ecu.positive("1902ff")

    asyncio.run(run())


# --- a stock udsoncan client ----------------------------------------------------------------------


class ServerConnection(QueueConnection):
    """udsoncan's queue connection with this server at the other end."""

    def __init__(self, server: UdsServer) -> None:
        super().__init__("carlightd")
        self.server = server

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        answer = asyncio.run(self.server.handle(payload))
        if answer is not None:
            self.fromuserqueue.put(answer)


def test_a_stock_udsoncan_client_with_the_readme_config_reads_it_all() -> None:
    view = car_view()
    server = UdsServer(FakeLink(view).link(), clock=FakeClock())
    config = dict(default_client_config)
    config.update(UDSONCAN_CONFIG)
    brake = stored_of(view, BRAKE_OPEN)
    assert brake.freeze_frame is not None
    with Client(ServerConnection(server), config=config) as client:  # type: ignore[arg-type]
        client.change_session(DiagnosticSessionControl.Session.extendedDiagnosticSession)
        client.tester_present()
        listed = client.get_dtc_by_status_mask(0xFF).service_data
        assert {dtc.id for dtc in listed.dtcs} == set(stored_codes(view))
        supported = client.get_supported_dtc().service_data
        assert len(supported.dtcs) == len(view.supported)
        [snapshot_dtc] = client.get_dtc_snapshot_by_dtc_number(
            BRAKE_OPEN.uds_code, record_number=0xFF
        ).service_data.dtcs
        assert snapshot_values(snapshot_dtc)[0x0106] == int(brake.freeze_frame.at.timestamp())
        [extended_dtc] = client.get_dtc_extended_data_by_dtc_number(
            BRAKE_OPEN.uds_code, record_number=0xFF
        ).service_data.dtcs
        assert [e.raw_data for e in extended_dtc.extended_data] == [
            bytes((brake.occurrences,)),
            bytes((brake.aging_counter,)),
        ]
        values = client.read_data_by_identifier([0xF190, 0x0101, 0x0102, 0x0103])
        assert values.service_data.values[0xF190] == view.vin
        client.clear_dtc()


# --- hand-made views ------------------------------------------------------------------------------


def stored_dtc(
    component: str,
    entry: DTCEntry,
    *,
    status: int = 0x2F,
    occurrences: int = 1,
    aging_counter: int = 0,
    freeze_frame: FreezeFrame | None = None,
) -> StoredDtc:
    return StoredDtc(
        component,
        entry.kind,
        entry.failure,
        entry.code,
        status,
        occurrences,
        aging_counter,
        T0,
        T0,
        freeze_frame,
    )


def hand_view(*dtcs: StoredDtc, telemetry: Telemetry | None = None) -> VehicleView:
    return VehicleView(
        vin=VIN,
        supported=supported_entries(set(Kind)),
        dtcs=dtcs,
        telemetry=telemetry,
        warning_lamps=MappingProxyType({}),
    )


def test_records_tables_match_the_udsoncan_config() -> None:
    """The README's client configuration is made of the same sizes the server encodes."""
    dids = UDSONCAN_CONFIG["data_identifiers"]
    for data_field in records.SNAPSHOT_FIELDS + records.LIVE_FIELDS:
        assert dids[data_field.did] == data_field.struct_format
        assert struct.calcsize(dids[data_field.did]) == data_field.size
    assert {record.size for record in records.EXTENDED_DATA_RECORDS} == {
        UDSONCAN_CONFIG["extended_data_size"]
    }


@pytest.mark.parametrize(
    ("response", "sent"),
    [
        (b"\x7f\x31\x11", False),  # serviceNotSupported
        (b"\x7f\x19\x12", False),  # subFunctionNotSupported
        (b"\x7f\x22\x31", False),  # requestOutOfRange
        (b"\x7f\x19\x7e", False),
        (b"\x7f\x19\x7f", False),
        (b"\x7f\x22\x13", True),  # a malformed request is still said to be one
        (b"\x7f\x22\x22", True),
        (b"\x62\xf1\x90" + b"A" * 17, True),
        (None, False),
    ],
)
def test_a_functional_request_gets_no_refusal_of_what_is_not_served(
    response: bytes | None, sent: bool
) -> None:
    assert (uds.to_functional_request(response) == response and response is not None) is sent
