"""An ELM327-compatible OBD-II interpreter: the chip's command language, bytes in, answers out.

One `Elm327Session` per connection, as one chip per adapter: its own echo, linefeed, spaces and
headers settings. It speaks as an ELM327 v1.5 wired to one ECU on ISO 15765-4 CAN (11-bit ids,
500 kbit/s): requests go to 0x7DF (functional) or 0x7E0, the ECU answers from 0x7E8, its answers
framed by ISO-TP (ISO 15765-2) in 8-byte frames. References: the ELM327 datasheet (Elm Electronics)
for the AT commands and output formats, SAE J1979 for the OBD-II services. Pure: no sockets, no
clock; the one act on the car is `await link.clear()` (service 04).

Every line is hostile until parsed: a line is bounded (`MAX_LINE` characters, the rest discarded up
to its CR), anything that is not printable ASCII makes it a "?", and nothing raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from carlightd import logs
from carlightd.core.domain import Kind
from carlightd.core.dtc import DTCEntry, DTCStatus, by_uds_code
from carlightd.outputs.scan_tool.tally import worth_logging
from carlightd.outputs.scan_tool.view import ScanToolLink, VehicleView

log = logs.get("carlightd.scan_tool.elm327")

VERSION = "ELM327 v1.5"
DEVICE_DESCRIPTION = "carlightd OBD-II interface"

# The longest command line kept (the chip's buffer); a longer one is answered "?".
MAX_LINE = 64

CR, LF = 0x0D, 0x0A
PROMPT = ">"
OK = "OK"
NO_DATA = "NO DATA"
UNKNOWN = "?"
UNABLE_TO_CONNECT = "UNABLE TO CONNECT"

# The one protocol the car speaks, and the ids on it.
CAN_PROTOCOL = "6"
ECU_RESPONSE_ID = 0x7E8
ECU_REQUEST_IDS = frozenset({0x7DF, 0x7E0})  # functional (all ECUs) and this ECU's physical id
FUNCTIONAL_REQUEST_ID = 0x7DF
CAN_FRAME_BYTES = 8
FRAME_PADDING = 0x00
SINGLE_FRAME_MAX = CAN_FRAME_BYTES - 1
MAX_OBD_REQUEST = SINGLE_FRAME_MAX  # a request is one single frame
MAX_MODE01_PIDS = 6  # SAE J1979: up to six PIDs in one service 01 request on CAN

# ELM327 protocol numbers (ATSP / ATDPN) and how ATDP names them.
PROTOCOL_NAMES = {
    "0": "AUTO",
    "1": "SAE J1850 PWM",
    "2": "SAE J1850 VPW",
    "3": "ISO 9141-2",
    "4": "ISO 14230-4 (KWP 5BAUD)",
    "5": "ISO 14230-4 (KWP FAST)",
    "6": "ISO 15765-4 (CAN 11/500)",
    "7": "ISO 15765-4 (CAN 29/500)",
    "8": "ISO 15765-4 (CAN 11/250)",
    "9": "ISO 15765-4 (CAN 29/250)",
    "A": "SAE J1939 (CAN 29/250)",
    "B": "USER1 (CAN 11/125)",
    "C": "USER2 (CAN 11/50)",
}

# SAE J1979 service ids; a positive answer is the service id + 0x40.
POSITIVE = 0x40
CURRENT_DATA, STORED_DTCS, CLEAR_DTCS, PENDING_DTCS, VEHICLE_INFO = 0x01, 0x03, 0x04, 0x07, 0x09
NEGATIVE_RESPONSE = 0x7F
CONDITIONS_NOT_CORRECT = 0x22  # ISO 14229 NRC, what an ECU says when it cannot clear now
VIN_LENGTH = 17
VIN_DATA_ITEMS = 0x01  # service 09 PID 02 on CAN: one data item, the whole VIN


@dataclass(slots=True)
class Settings:
    """What AT commands set; ATZ, ATWS and ATD restore these defaults."""

    echo: bool = True
    linefeeds: bool = False
    spaces: bool = True
    headers: bool = False
    show_dlc: bool = False  # ATD1: the frame length between header and data
    auto_format: bool = True  # ATCAF: PCI bytes added to requests and hidden in answers
    responses: bool = True  # ATR0: send requests without waiting for answers
    automatic: bool = True  # ATSP0 / ATSP An / ATTP: the chip searches
    protocol: str = "0"
    header: int = FUNCTIONAL_REQUEST_ID  # ATSH: where requests are sent
    receive_filter: str | None = None  # ATCRA: which sender's answers are shown ("X" = any digit)


# --- the ECU: service 01, 03/07, 04, 09 -------------------------------------------------------


def _uint16(value: float) -> bytes:
    return max(0, min(0xFFFF, round(value))).to_bytes(2, "big")


def _supported_bitmap(pids: frozenset[int], base: int) -> bytes:
    """The "PIDs supported [base+1 .. base+0x20]" answer: bit 31 is base+1, bit 0 is base+0x20."""
    bits = 0
    for pid in pids:
        if base < pid <= base + 0x20:
            bits |= 1 << (base + 0x20 - pid)
    return bits.to_bytes(4, "big")


@cache
def _catalogue_by_failure() -> dict[tuple[Kind, str], DTCEntry]:
    return {(entry.kind, entry.failure): entry for entry in by_uds_code().values()}


def emission_codes(view: VehicleView, status_bit: DTCStatus) -> list[int]:
    """The two-byte codes of the emission-related stored DTCs with this status bit, each once,
    in fault-memory order (a code two parts share is one code to a scan tool)."""
    entries = _catalogue_by_failure()
    codes: list[int] = []
    for stored in view.dtcs:
        entry = entries.get((stored.kind, stored.failure))
        if entry is None or not entry.emission_related or not stored.dtc_status & status_bit:
            continue
        code = entry.obd_code
        if code not in codes:
            codes.append(code)
    return codes[:0xFF]  # the count is one byte


def _monitor_status(view: VehicleView) -> bytes:
    """PID 01: MIL and the confirmed emission-related DTC count, then the readiness monitors of a
    spark-ignition car that supports none of them (all zero: not supported, nothing incomplete)."""
    mil = 0x80 if view.warning_lamps.get("check_engine", False) else 0x00
    count = min(0x7F, len(emission_codes(view, DTCStatus.CONFIRMED_DTC)))
    return bytes([mil | count, 0x00, 0x00, 0x00])


def _engine_speed(view: VehicleView) -> bytes | None:
    rpm = view.telemetry.engine_rpm if view.telemetry else None
    return None if rpm is None else _uint16(rpm * 4)  # J1979: 1/4 rpm per bit


def _control_module_voltage(view: VehicleView) -> bytes | None:
    volts = view.telemetry.bus_v if view.telemetry else None
    return None if volts is None else _uint16(volts * 1000)  # J1979: 1 mV per bit


def _vin(view: VehicleView) -> bytes:
    vin = view.vin.encode("ascii", "replace")[:VIN_LENGTH]
    return bytes([VIN_DATA_ITEMS]) + vin.ljust(VIN_LENGTH, b"\x00")


PidReader = Callable[[VehicleView], bytes | None]

# Service 01 PIDs. The "PIDs supported" ones (0x00, 0x20, 0x40) are derived from this table.
CURRENT_DATA_PIDS: dict[int, PidReader] = {
    0x01: _monitor_status,
    0x0C: _engine_speed,
    0x42: _control_module_voltage,
}
_MODE01_BITMAP_PIDS = (0x00, 0x20, 0x40)
_MODE01_SUPPORTED = frozenset({*CURRENT_DATA_PIDS, 0x20, 0x40})

# Service 09 PIDs.
VEHICLE_INFO_PIDS: dict[int, PidReader] = {0x02: _vin}
_MODE09_SUPPORTED = frozenset(VEHICLE_INFO_PIDS)


def _current_data_pid(view: VehicleView, pid: int) -> bytes | None:
    if pid in _MODE01_BITMAP_PIDS:
        return _supported_bitmap(_MODE01_SUPPORTED, pid)
    reader = CURRENT_DATA_PIDS.get(pid)
    return None if reader is None else reader(view)


def _current_data(view: VehicleView, pids: bytes) -> bytes | None:
    if not 1 <= len(pids) <= MAX_MODE01_PIDS:
        return None
    answer = bytearray()
    for pid in pids:
        value = _current_data_pid(view, pid)
        if value is not None:
            answer += bytes([pid]) + value
    return bytes([CURRENT_DATA + POSITIVE]) + answer if answer else None


def _dtc_list(view: VehicleView, service: int, status_bit: DTCStatus) -> bytes:
    codes = emission_codes(view, status_bit)
    body = b"".join(code.to_bytes(2, "big") for code in codes)
    return bytes([service + POSITIVE, len(codes)]) + body


def _vehicle_info(view: VehicleView, pids: bytes) -> bytes | None:
    if len(pids) != 1:
        return None
    pid = pids[0]
    if pid == 0x00:
        value: bytes | None = _supported_bitmap(_MODE09_SUPPORTED, 0x00)
    else:
        reader = VEHICLE_INFO_PIDS.get(pid)
        value = None if reader is None else reader(view)
    return None if value is None else bytes([VEHICLE_INFO + POSITIVE, pid]) + value


async def ecu_answer(link: ScanToolLink, request: bytes) -> bytes | None:
    """The ECU's answer to one OBD-II request (service id and data), None if it stays silent."""
    service, data = request[0], request[1:]
    view = link.view()
    if service == CURRENT_DATA:
        return _current_data(view, data)
    if service in (STORED_DTCS, PENDING_DTCS) and not data:
        bit = DTCStatus.CONFIRMED_DTC if service == STORED_DTCS else DTCStatus.PENDING_DTC
        return _dtc_list(view, service, bit)
    if service == CLEAR_DTCS and not data:
        return await _clear(link)
    if service == VEHICLE_INFO:
        return _vehicle_info(view, data)
    return None


_clear_failures = 0


async def _clear(link: ScanToolLink) -> bytes:
    global _clear_failures  # noqa: PLW0603 -- one count for the process: logs stay bounded
    try:
        cleared = await link.clear()
    except Exception:  # the daemon's clear failed: the ECU says so, the session goes on
        _clear_failures += 1
        if worth_logging(_clear_failures):  # a client repeating 04 cannot flood the log
            log.exception("elm327_clear_failed", failures=_clear_failures)
        return bytes([NEGATIVE_RESPONSE, CLEAR_DTCS, CONDITIONS_NOT_CORRECT])
    if cleared:
        log.info("elm327_faults_cleared", cleared=cleared)
    return bytes([CLEAR_DTCS + POSITIVE])


# --- the CAN link: ISO-TP framing --------------------------------------------------------------


def isotp_frames(payload: bytes) -> list[bytes]:
    """The 8-byte CAN frames carrying this payload: one single frame, or a first frame (12-bit
    length) and consecutive frames (sequence number 1..F, 0, 1 ..), padded."""
    if len(payload) <= SINGLE_FRAME_MAX:
        frame = bytes([len(payload)]) + payload
        return [frame.ljust(CAN_FRAME_BYTES, bytes([FRAME_PADDING]))]
    length = min(len(payload), 0xFFF)
    payload = payload[:length]
    frames = [bytes([0x10 | length >> 8, length & 0xFF]) + payload[:6]]
    for index, start in enumerate(range(6, length, SINGLE_FRAME_MAX), start=1):
        frame = bytes([0x20 | index & 0x0F]) + payload[start : start + SINGLE_FRAME_MAX]
        frames.append(frame.ljust(CAN_FRAME_BYTES, bytes([FRAME_PADDING])))
    return frames


# --- the chip ----------------------------------------------------------------------------------

AtHandler = Callable[["Elm327Session", "re.Match[str]"], list[str]]


class Elm327Session:
    """One adapter's state; `feed` takes the bytes a client sent and returns the chip's output."""

    def __init__(self, link: ScanToolLink) -> None:
        self.link = link
        self.settings = Settings()
        self._line = bytearray()
        self._line_bad = False  # a control or non-ASCII byte, or too long: the line is a "?"
        self._last_request: str | None = None  # what a lone CR repeats
        self.lines = 0  # command lines answered
        self.rejected = 0  # of which answered "?"

    async def feed(self, data: bytes) -> bytes:
        """Everything the chip prints for these bytes: an answer and a prompt per CR."""
        out = bytearray()
        for byte in data:
            if byte == CR:
                out += await self._end_of_line()
            elif byte == LF:
                continue  # terminals send CR LF; the chip ignores LF
            elif 0x20 <= byte < 0x7F and len(self._line) < MAX_LINE:
                self._line.append(byte)
            else:
                self._line_bad = True
        return bytes(out)

    async def _end_of_line(self) -> bytes:
        raw = self._line.decode("ascii")
        bad = self._line_bad
        self._line.clear()
        self._line_bad = False
        echo = raw + self._eol() if self.settings.echo else ""
        self.lines += 1
        answer = [UNKNOWN] if bad else await self._command(raw.replace(" ", "").upper())
        if answer == [UNKNOWN]:
            self.rejected += 1
        eol = self._eol()
        text = echo + "".join(line + eol for line in answer) + (eol if answer else "") + PROMPT
        return text.encode("ascii")

    def _eol(self) -> str:
        return "\r\n" if self.settings.linefeeds else "\r"

    async def _command(self, command: str) -> list[str]:
        if not command:
            # A lone CR repeats the last request, as on the chip (never a clear: see `_request`).
            return [] if self._last_request is None else await self._request(self._last_request)
        if command.startswith("AT"):
            return self._at(command[2:])
        return await self._request(command)

    # --- AT commands

    def _at(self, command: str) -> list[str]:
        for pattern, handler in AT_COMMANDS:
            match = pattern.fullmatch(command)
            if match:
                return handler(self, match)
        return [UNKNOWN]

    def _reset(self, _: re.Match[str]) -> list[str]:
        self.settings = Settings()
        self._last_request = None
        return ["", VERSION]

    def _defaults(self, _: re.Match[str]) -> list[str]:
        self.settings = Settings()
        return [OK]

    def _set_flag(self, match: re.Match[str]) -> list[str]:
        name = FLAGS[match["flag"]]
        setattr(self.settings, name, match["on"] == "1")
        return [OK]

    def _set_protocol(self, match: re.Match[str]) -> list[str]:
        protocol = match["protocol"]
        # SP 0 and SP An search; TP n tries n first, then searches; SP n (n > 0) insists on n.
        self.settings.automatic = protocol == "0" or bool(match["auto"]) or match["verb"] == "TP"
        self.settings.protocol = protocol
        return [OK]

    def _connected_protocol(self) -> str | None:
        """The protocol the ECU is reached on, None if the chip is held to one the car lacks."""
        if self.settings.automatic or self.settings.protocol == CAN_PROTOCOL:
            return CAN_PROTOCOL
        return None

    def _describe_protocol(self, _: re.Match[str]) -> list[str]:
        protocol = self._connected_protocol() or self.settings.protocol
        name = PROTOCOL_NAMES[protocol]
        return [f"AUTO, {name}" if self.settings.automatic else name]

    def _describe_protocol_number(self, _: re.Match[str]) -> list[str]:
        protocol = self._connected_protocol() or self.settings.protocol
        return [f"A{protocol}" if self.settings.automatic else protocol]

    def _read_voltage(self, _: re.Match[str]) -> list[str]:
        telemetry = self.link.view().telemetry
        volts = telemetry.bus_v if telemetry else None
        return [NO_DATA] if volts is None else [f"{volts:.1f}V"]

    def _set_header(self, match: re.Match[str]) -> list[str]:
        # On an 11-bit protocol the chip sends the last three digits of a longer header.
        self.settings.header = int(match["header"], 16) & 0x7FF
        return [OK]

    def _set_receive_filter(self, match: re.Match[str]) -> list[str]:
        self.settings.receive_filter = match["filter"]
        return [OK]

    # --- OBD requests

    async def _request(self, command: str) -> list[str]:
        if not re.fullmatch(r"[0-9A-F]{2,}", command):
            return [UNKNOWN]
        digits = command[:-1] if len(command) % 2 else command  # the odd digit: a response count
        request = bytes.fromhex(digits)
        if not self.settings.auto_format:
            return await self._raw_request(request)
        if len(request) > MAX_OBD_REQUEST:
            return [UNKNOWN]
        return await self._send(command, request)

    async def _raw_request(self, frame: bytes) -> list[str]:
        """CAF0: the client writes the PCI byte; a frame the ECU cannot parse goes unanswered."""
        if len(frame) > CAN_FRAME_BYTES:
            return [UNKNOWN]
        if not frame or not 1 <= frame[0] <= SINGLE_FRAME_MAX or len(frame) < 1 + frame[0]:
            return [NO_DATA]
        return await self._send("".join(f"{b:02X}" for b in frame), frame[1 : 1 + frame[0]])

    async def _send(self, command: str, request: bytes) -> list[str]:
        if self._connected_protocol() is None:
            return [UNABLE_TO_CONNECT]
        # A clear is never repeated by a lone CR: one CR too many must not erase a fault memory.
        self._last_request = None if request[0] == CLEAR_DTCS else command
        if self.settings.header not in ECU_REQUEST_IDS:
            answer = None  # addressed to an ECU this car does not have
        else:
            answer = await ecu_answer(self.link, request)
        if not self.settings.responses:
            return []
        if answer is None or not self._shows_ecu():
            return [NO_DATA]
        return self._format(isotp_frames(answer), len(answer))

    def _shows_ecu(self) -> bool:
        wanted = self.settings.receive_filter
        sender = f"{ECU_RESPONSE_ID:03X}"
        return wanted is None or all(w in ("X", s) for w, s in zip(wanted, sender, strict=True))

    def _format(self, frames: list[bytes], length: int) -> list[str]:
        settings = self.settings
        sep = " " if settings.spaces else ""

        def hex_bytes(data: bytes) -> str:
            return sep.join(f"{b:02X}" for b in data)

        if settings.headers or not settings.auto_format:
            prefix = [f"{ECU_RESPONSE_ID:03X}"] if settings.headers else []
            if settings.headers and settings.show_dlc:
                prefix.append(str(CAN_FRAME_BYTES))
            return [sep.join([*prefix, hex_bytes(frame)]) for frame in frames]
        if len(frames) == 1:
            return [hex_bytes(frames[0][1 : 1 + length])]
        # The chip's own layout of a multi-frame answer: its length, then numbered lines.
        lines = [f"{length:03X}", f"0:{sep}{hex_bytes(frames[0][2:])}"]
        lines += [f"{frame[0] & 0x0F:X}:{sep}{hex_bytes(frame[1:])}" for frame in frames[1:]]
        return lines


def _ok(_: Elm327Session, __: re.Match[str]) -> list[str]:
    return [OK]


def _version(_: Elm327Session, __: re.Match[str]) -> list[str]:
    return [VERSION]


def _description(_: Elm327Session, __: re.Match[str]) -> list[str]:
    return [DEVICE_DESCRIPTION]


# ATE, ATL, ATS, ATH, ATD, ATCAF, ATR: on/off settings.
FLAGS = {
    "E": "echo",
    "L": "linefeeds",
    "S": "spaces",
    "H": "headers",
    "D": "show_dlc",
    "CAF": "auto_format",
    "R": "responses",
}

HEX = "[0-9A-F]"

# The AT command table (after "AT", spaces removed, upper case): full-match pattern -> handler.
AT_COMMANDS: list[tuple[re.Pattern[str], AtHandler]] = [
    (re.compile(pattern), handler)
    for pattern, handler in [
        ("Z|WS", Elm327Session._reset),
        ("D", Elm327Session._defaults),
        ("I", _version),
        ("@1", _description),
        ("(?P<flag>E|L|S|H|D|CAF|R)(?P<on>[01])", Elm327Session._set_flag),
        ("(?P<verb>SP|TP)(?P<auto>A?)(?P<protocol>[0-9A-C])", Elm327Session._set_protocol),
        ("DP", Elm327Session._describe_protocol),
        ("DPN", Elm327Session._describe_protocol_number),
        ("RV", Elm327Session._read_voltage),
        (f"SH(?P<header>{HEX}{{3}}|{HEX}{{6}}|{HEX}{{8}})", Elm327Session._set_header),
        ("CRA(?P<filter>[0-9A-FX]{3})?", Elm327Session._set_receive_filter),
        # Accepted and harmless here: timing, memory, CAN flow control and formatting details
        # that change nothing on this one simulated ECU.
        ("AT[012]", _ok),
        (f"ST{HEX}{{2}}", _ok),
        ("M[01]", _ok),
        ("CFC[01]", _ok),
        ("AL|NL|AR|PC|LP|JE|JS", _ok),
        ("V[01]|JHF[01]|KW[01]|CSM[01]", _ok),
        (f"CEA({HEX}{{2}})?", _ok),
        (f"FCSM[012]|FCSH{HEX}{{3}}|FCSD({HEX}{{2}}){{1,5}}", _ok),
        (f"SW{HEX}{{2}}|IIA{HEX}{{2}}|CP{HEX}{{2}}", _ok),
    ]
]
