"""The ELM327 interpreter on its own: every AT command, every PID, the output formats (echo,
headers, spaces, linefeeds, multi-frame) and hostile lines, against the ELM327 datasheet's formats
and SAE J1979's encodings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carlightd.core.diagnoser import Telemetry
from carlightd.core.domain import Ignition, Kind
from carlightd.core.dtc import DTCStatus, lookup
from carlightd.core.memory import StoredDtc
from carlightd.outputs.scan_tool.elm327 import MAX_LINE, Elm327Session, isotp_frames
from carlightd.outputs.scan_tool.view import ScanToolLink, VehicleView, supported_entries

VIN = "CARLGHTD000000001"
AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIRMED = DTCStatus.CONFIRMED_DTC | DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR
PENDING = DTCStatus.PENDING_DTC | DTCStatus.TEST_FAILED | DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR


def stored(component: str, kind: Kind, failure: str, status: int) -> StoredDtc:
    code = lookup(kind, failure).code
    return StoredDtc(component, kind, failure, code, int(status), 1, 0, AT, AT, None)


def car_view(*, telemetry: bool = True, mil: bool = True) -> VehicleView:
    """An alternator with no output (P0620, confirmed, emission-related), a battery discharge only
    pending (P0562), a blown brake lamp (B1200, confirmed, not emission-related)."""
    return VehicleView(
        vin=VIN,
        supported=supported_entries({Kind.LAMP, Kind.BATTERY, Kind.ALTERNATOR}),
        dtcs=(
            stored("alternator", Kind.ALTERNATOR, "no_output", CONFIRMED),
            stored("battery", Kind.BATTERY, "discharged", PENDING),
            stored("brake_left", Kind.LAMP, "open_circuit", CONFIRMED),
        ),
        telemetry=Telemetry(Ignition.RUN, 1726.0, 12.6, None, None, None) if telemetry else None,
        warning_lamps=MappingProxyType({"bulb": True, "battery": True, "check_engine": mil}),
    )


@dataclass
class Car:
    """The daemon's side of the link: a view to answer from, and a clear that counts."""

    view: VehicleView = field(default_factory=car_view)
    clears: int = 0

    async def clear(self) -> int:
        self.clears += 1
        cleared = len(self.view.dtcs)
        self.view = VehicleView(vin=VIN, supported=self.view.supported)
        return cleared

    def link(self) -> ScanToolLink:
        return ScanToolLink(view=lambda: self.view, clear=self.clear)


async def ask(session: Elm327Session, line: str | bytes) -> str:
    data = line.encode() if isinstance(line, str) else line
    return (await session.feed(data + b"\r")).decode("ascii")


async def quiet_session(car: Car | None = None) -> Elm327Session:
    """Echo off, the rest at the chip's defaults (headers off, spaces on, CR line ends)."""
    session = Elm327Session((car or Car()).link())
    assert await ask(session, "ATE0") == "ATE0\rOK\r\r>"
    return session


async def answer(session: Elm327Session, line: str | bytes) -> list[str]:
    """The answer lines of one command (echo off), without the blank line and the prompt."""
    text = (await ask(session, line)).replace("\r\n", "\r")
    assert text.endswith("\r\r>"), text
    return text.removesuffix("\r\r>").split("\r")


# --- the connection sequence and the AT commands ------------------------------------------------


async def test_python_obd_connection_sequence_byte_for_byte() -> None:
    session = Elm327Session(Car().link())
    assert await ask(session, b"\x7f\x7f") == "\r?\r\r>"  # its baud probe: a prompt is enough
    assert await ask(session, "ATZ") == "ATZ\r\rELM327 v1.5\r\r>"
    assert await ask(session, "ATE0") == "ATE0\rOK\r\r>"  # echoed: E1 is the default
    assert await ask(session, "ATH1") == "OK\r\r>"
    assert await ask(session, "ATL0") == "OK\r\r>"
    assert await ask(session, "AT RV") == "12.6V\r\r>"
    assert await ask(session, "ATSP0") == "OK\r\r>"
    assert await ask(session, "0100") == "7E8 06 41 00 80 10 00 01 00\r\r>"
    assert await ask(session, "ATDPN") == "A6\r\r>"


async def test_reset_restores_the_defaults() -> None:
    session = await quiet_session()
    for command in ("ATH1", "ATS0", "ATL1"):
        await ask(session, command)
    assert await ask(session, "ATZ") == "\rELM327 v1.5\r\r>"  # not echoed: E0 until the reset
    assert await ask(session, "0100") == "0100\r41 00 80 10 00 01\r\r>"  # echo on, H0 S1 L0
    assert await ask(session, "ATWS") == "ATWS\r\rELM327 v1.5\r\r>"
    await ask(session, "ATE0")
    await ask(session, "ATH1")
    assert await answer(session, "ATD") == ["OK"]
    assert await ask(session, "010C") == "010C\r41 0C 1A F8\r\r>"  # ATD: echo on, headers off


async def test_identification() -> None:
    session = await quiet_session()
    assert await answer(session, "ATI") == ["ELM327 v1.5"]
    assert await answer(session, "AT@1") == ["carlightd OBD-II interface"]


@pytest.mark.parametrize(
    "command",
    [
        "ATE1", "ATL0", "ATL1", "ATS0", "ATS1", "ATH0", "ATH1", "ATD0", "ATD1", "ATM0", "ATM1",
        "ATCAF0", "ATCAF1", "ATCFC0", "ATCFC1", "ATR0", "ATR1", "ATAL", "ATNL", "ATAR", "ATPC",
        "ATLP", "ATAT0", "ATAT1", "ATAT2", "ATST32", "ATST FF", "ATSP0", "ATSP6", "ATSPA6",
        "ATTP6", "ATTPA6", "ATSH7E0", "AT SH 7E0 ", "ATSH18DB33", "ATSH18DB33F1", "ATCRA7E8",
        "ATCRA7EX", "ATCRA", "ATV0", "ATV1", "ATJE", "ATJS", "ATJHF1", "ATKW0", "ATCSM1",
        "ATCEA", "ATCEA12", "ATFCSM1", "ATFCSH7E0", "ATFCSD300000", "ATSW00", "ATIIA10",
        "ATCP18", "atsp0", "At Sp 6",
    ],
)  # fmt: skip
async def test_at_commands_apps_send_answer_ok(command: str) -> None:
    session = await quiet_session()
    assert await answer(session, command) == ["OK"]


@pytest.mark.parametrize(
    "command", ["AT", "ATX", "ATE2", "ATSP", "ATSPD", "ATSP00", "ATST", "ATSH7", "ATMA", "AT@2"]
)
async def test_unknown_or_malformed_at_commands_are_a_question_mark(command: str) -> None:
    session = await quiet_session()
    assert await answer(session, command) == ["?"]
    assert session.rejected == 1


async def test_protocol_display_and_selection() -> None:
    session = await quiet_session()
    assert await answer(session, "ATDP") == ["AUTO, ISO 15765-4 (CAN 11/500)"]
    assert await answer(session, "ATDPN") == ["A6"]
    await ask(session, "ATSP6")
    assert await answer(session, "ATDP") == ["ISO 15765-4 (CAN 11/500)"]
    assert await answer(session, "ATDPN") == ["6"]
    assert await answer(session, "010C") == ["41 0C 1A F8"]
    await ask(session, "ATSPA3")  # automatic, trying ISO 9141-2 first: finds the CAN ECU
    assert await answer(session, "ATDPN") == ["A6"]
    await ask(session, "ATSP3")  # held to a protocol the car does not speak
    assert await answer(session, "ATDP") == ["ISO 9141-2"]
    assert await answer(session, "ATDPN") == ["3"]
    assert await answer(session, "010C") == ["UNABLE TO CONNECT"]
    await ask(session, "ATTP3")  # try 3, then search
    assert await answer(session, "ATDPN") == ["A6"]
    assert await answer(session, "010C") == ["41 0C 1A F8"]


async def test_battery_voltage_comes_from_the_bus_voltage() -> None:
    session = await quiet_session()
    assert await answer(session, "ATRV") == ["12.6V"]
    session = await quiet_session(Car(view=car_view(telemetry=False)))
    assert await answer(session, "ATRV") == ["NO DATA"]


# --- the OBD-II services --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ("0100", "41 00 80 10 00 01"),  # PIDs 01, 0C, and 20 (the next range)
        ("0120", "41 20 00 00 00 01"),  # PID 40
        ("0140", "41 40 40 00 00 00"),  # PID 42
        ("0101", "41 01 81 00 00 00"),  # MIL on, one confirmed emission-related DTC
        ("010C", "41 0C 1A F8"),  # 1726 rpm x 4 = 0x1AF8
        ("0142", "41 42 31 38"),  # 12.6 V = 12600 mV = 0x3138
        ("01 0C 42", "41 0C 1A F8 42 31 38"),  # several PIDs in one request
        ("010C05", "41 0C 1A F8"),  # only the supported one of two
        ("010C1", "41 0C 1A F8"),  # the odd last digit: how many answers to wait for
        ("03", "43 01 06 20"),  # P0620 only: B1200 is not emission-related, P0562 only pending
        ("07", "47 01 05 62"),  # P0562 pending
        ("0900", "49 00 40 00 00 00"),  # PID 02
    ],
)
async def test_obd_requests(request_: str, expected: str) -> None:
    session = await quiet_session()
    assert await answer(session, request_) == [expected]


@pytest.mark.parametrize(
    "request_", ["0105", "0102", "0160", "01", "0901", "0300", "02", "0A", "22F190"]
)
async def test_unsupported_pids_and_services_are_no_data(request_: str) -> None:
    session = await quiet_session()
    assert await answer(session, request_) == ["NO DATA"]


async def test_mil_off_and_no_emission_dtcs() -> None:
    car = Car(view=car_view(mil=False))
    car.view = VehicleView(
        vin=VIN, supported=car.view.supported, dtcs=car.view.dtcs[2:], telemetry=None
    )
    session = await quiet_session(car)
    assert await answer(session, "0101") == ["41 01 00 00 00 00"]
    assert await answer(session, "03") == ["43 00"]
    assert await answer(session, "07") == ["47 00"]


async def test_values_not_available_before_the_first_cycle_are_no_data() -> None:
    session = await quiet_session(Car(view=car_view(telemetry=False)))
    assert await answer(session, "010C") == ["NO DATA"]
    assert await answer(session, "0142") == ["NO DATA"]
    assert await answer(session, "0100") == ["41 00 80 10 00 01"]
    assert await answer(session, "0101") == ["41 01 81 00 00 00"]


async def test_a_code_two_parts_share_is_reported_once() -> None:
    car = Car()
    twice = stored("alternator_2", Kind.ALTERNATOR, "no_output", CONFIRMED)
    car.view = VehicleView(vin=VIN, supported=car.view.supported, dtcs=(*car.view.dtcs, twice))
    session = await quiet_session(car)
    assert await answer(session, "03") == ["43 01 06 20"]


async def test_clear_calls_the_daemons_clear_once_and_is_never_repeated() -> None:
    car = Car()
    session = await quiet_session(car)
    assert await answer(session, "04") == ["44"]
    assert car.clears == 1
    assert await ask(session, "") == ">"  # a lone CR after a clear repeats nothing
    assert car.clears == 1
    assert await answer(session, "03") == ["43 00"]
    assert await answer(session, "0101") == ["41 01 00 00 00 00"]


async def test_a_failing_clear_is_a_negative_answer() -> None:
    async def broken_clear() -> int:
        raise RuntimeError("the state file is read-only")

    session = await quiet_session()
    session.link = ScanToolLink(view=car_view, clear=broken_clear)
    assert await answer(session, "04") == ["7F 04 22"]
    assert await answer(session, "0101") == ["41 01 81 00 00 00"]


async def test_vin_multi_frame_in_every_format() -> None:
    session = await quiet_session()
    assert await answer(session, "0902") == [
        "014",
        "0: 49 02 01 43 41 52",
        "1: 4C 47 48 54 44 30 30",
        "2: 30 30 30 30 30 30 31",
    ]
    await ask(session, "ATS0")
    compact = ["014", "0:490201434152", "1:4C474854443030", "2:30303030303031"]
    assert await answer(session, "0902") == compact
    await ask(session, "ATS1")
    await ask(session, "ATH1")
    assert await answer(session, "0902") == [
        "7E8 10 14 49 02 01 43 41 52",
        "7E8 21 4C 47 48 54 44 30 30",
        "7E8 22 30 30 30 30 30 30 31",
    ]
    await ask(session, "ATD1")
    assert (await answer(session, "0902"))[0] == "7E8 8 10 14 49 02 01 43 41 52"


async def test_headers_and_spaces() -> None:
    session = await quiet_session()
    await ask(session, "ATH1")
    assert await answer(session, "010C") == ["7E8 04 41 0C 1A F8 00 00 00"]
    assert await answer(session, "03") == ["7E8 04 43 01 06 20 00 00 00"]
    await ask(session, "ATS0")
    assert await answer(session, "010C") == ["7E804410C1AF8000000"]
    await ask(session, "ATH0")
    assert await answer(session, "010C") == ["410C1AF8"]


async def test_echo_and_linefeeds() -> None:
    session = Elm327Session(Car().link())
    assert await ask(session, "01 0c") == "01 0c\r41 0C 1A F8\r\r>"  # echoed as typed
    assert await ask(session, "ATL1") == "ATL1\rOK\r\n\r\n>"
    assert await ask(session, "010C") == "010C\r\n41 0C 1A F8\r\n\r\n>"
    assert await ask(session, "ATE0") == "ATE0\r\nOK\r\n\r\n>"
    assert await ask(session, "010C") == "41 0C 1A F8\r\n\r\n>"


async def test_without_auto_formatting_the_client_writes_the_pci() -> None:
    session = await quiet_session()
    await ask(session, "ATCAF0")
    assert await answer(session, "02010C") == ["04 41 0C 1A F8 00 00 00"]
    assert await answer(session, "0209020000000000") == [
        "10 14 49 02 01 43 41 52",
        "21 4C 47 48 54 44 30 30",
        "22 30 30 30 30 30 30 31",
    ]
    assert await answer(session, "05010C") == ["NO DATA"]  # a PCI longer than the frame
    assert await answer(session, "010C") == ["NO DATA"]  # 01 is a PCI: a one-byte request "0C"
    assert await answer(session, "020902000000000000") == ["?"]  # more than one frame


async def test_header_and_receive_filter_choose_the_ecu() -> None:
    session = await quiet_session()
    await ask(session, "ATSH7E0")
    assert await answer(session, "010C") == ["41 0C 1A F8"]
    await ask(session, "ATSH7E1")  # another ECU: nobody answers
    assert await answer(session, "010C") == ["NO DATA"]
    await ask(session, "ATSH7DF")
    await ask(session, "ATCRA7E9")
    assert await answer(session, "010C") == ["NO DATA"]
    await ask(session, "ATCRA7EX")
    assert await answer(session, "010C") == ["41 0C 1A F8"]


async def test_responses_off_sends_without_waiting() -> None:
    car = Car()
    session = await quiet_session(car)
    await ask(session, "ATR0")
    assert await ask(session, "010C") == ">"
    assert await ask(session, "04") == ">"
    assert car.clears == 1


async def test_a_lone_cr_repeats_the_last_request() -> None:
    session = await quiet_session()
    assert await ask(session, "") == ">"  # nothing to repeat yet
    await ask(session, "010C")
    assert await answer(session, "") == ["41 0C 1A F8"]
    assert await answer(session, "  ") == ["41 0C 1A F8"]  # spaces are nothing
    await ask(session, "ATH1")  # an AT command is not a request to repeat
    assert await answer(session, "") == ["7E8 04 41 0C 1A F8 00 00 00"]


@pytest.mark.parametrize("request_", ["01ZZ", "0", "G1", "0102030405060708", "01-0C", "0x010C"])
async def test_malformed_requests_are_a_question_mark(request_: str) -> None:
    session = await quiet_session()
    assert await answer(session, request_) == ["?"]


def test_isotp_framing() -> None:
    assert isotp_frames(b"\x41\x0c\x1a\xf8") == [bytes.fromhex("04410C1AF8000000")]
    frames = isotp_frames(bytes(range(40)))
    assert [f[0] for f in frames] == [0x10, 0x21, 0x22, 0x23, 0x24, 0x25]
    assert frames[0][1] == 40
    assert all(len(f) == 8 for f in frames)
    assert frames[0][2:] + b"".join(f[1:] for f in frames[1:]) == bytes(range(40)) + bytes(1)
    long_frames = isotp_frames(bytes(200))
    assert [f[0] & 0x0F for f in long_frames[15:18]] == [0xF, 0x0, 0x1]  # sequence numbers wrap


# --- hostile lines --------------------------------------------------------------------------------


async def test_a_10_kb_line_is_one_question_mark_and_the_next_command_works() -> None:
    session = await quiet_session()
    out = await session.feed(b"0" * 10_000 + b"\r")
    assert out == b"?\r\r>"
    assert await answer(session, "010C") == ["41 0C 1A F8"]


async def test_the_echo_of_a_long_line_is_bounded() -> None:
    session = Elm327Session(Car().link())
    out = await session.feed(b"A" * 10_000 + b"\r")
    assert out == b"A" * MAX_LINE + b"\r?\r\r>"


async def test_a_line_of_exactly_the_limit_is_taken() -> None:
    session = await quiet_session()
    line = "01" + " " * (MAX_LINE - 4) + "0C"
    assert len(line) == MAX_LINE
    assert await answer(session, line) == ["41 0C 1A F8"]
    assert await answer(session, line + " ") == ["?"]


@pytest.mark.parametrize(
    "line",
    [
        b"01\x000C",
        b"\x00",
        "ATZ\u00e9".encode(),
        "0100\u2028".encode(),
        b"AT\tZ",
        b"\x1b[A",
        b"\xff",
    ],
)
async def test_control_and_non_ascii_bytes_make_the_line_a_question_mark(line: bytes) -> None:
    car = Car()
    session = await quiet_session(car)
    assert await answer(session, line) == ["?"]
    assert await answer(session, "010C") == ["41 0C 1A F8"]  # and nothing of it stays


async def test_bytes_split_anywhere_give_the_same_answers() -> None:
    script = b"ATE0\r\nATH1\r0100\r09 02\r\r03\rATZ\r"
    whole = await Elm327Session(Car().link()).feed(script)
    session = Elm327Session(Car().link())
    pieces = [await session.feed(script[i : i + 1]) for i in range(len(script))]
    assert b"".join(pieces) == whole
    assert whole.count(b">") == script.count(b"\r")


async def test_a_cr_flood_gives_one_prompt_per_cr_and_bounded_output() -> None:
    session = await quiet_session()
    assert await session.feed(b"\r" * 10_000) == b">" * 10_000
    await ask(session, "0902")
    out = await session.feed(b"\r" * 1_000)
    assert out.count(b">") == 1_000
    assert len(out) == 1_000 * len(await session.feed(b"\r"))


async def test_no_bytes_no_answer() -> None:
    session = await quiet_session()
    assert await session.feed(b"") == b""
    assert await session.feed(b"01") == b""  # no CR yet
    assert await session.feed(b"0C\r") == b"41 0C 1A F8\r\r>"


# The largest answer one line can have here: an echo, and the VIN with headers and linefeeds.
MAX_ANSWER_BYTES = 512


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_never_raises_and_answers_each_cr_once(chunks: list[bytes]) -> None:
    async def run() -> None:
        car = Car()
        session = Elm327Session(car.link())
        for chunk in chunks:
            out = await session.feed(chunk)
            crs = chunk.count(b"\r")
            assert len(out) <= MAX_ANSWER_BYTES * crs
            assert out.endswith(b">") == (crs > 0)
            assert all(byte < 0x80 for byte in out)
        assert car.clears <= sum(chunk.count(b"\r") for chunk in chunks)

    asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.text(alphabet="0123456789ABCDEFATSPHLRZDCXabcdef @", max_size=MAX_LINE), max_size=12
    )
)
def test_fuzz_command_like_lines_get_one_prompt_each(lines: list[str]) -> None:
    async def run() -> None:
        session = Elm327Session(Car().link())
        for line in lines:
            out = await session.feed(line.encode() + b"\r")
            assert out.endswith(b">")
            assert out.count(b">") == 1
            assert len(out) <= MAX_ANSWER_BYTES

    asyncio.run(run())
