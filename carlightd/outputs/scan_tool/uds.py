"""A UDS server (ISO 14229-1) for one ECU: one request PDU in, its response PDU out.

Transport-free: DoIP and ISO-TP hand it the bytes and send back what it returns, sharing one
server and so one diagnostic session. It answers from the latest `VehicleView` and its one act
on the car is the fault-memory clear of the `ScanToolLink`. The services are those of DESIGN §7;
every other request gets the negative response ISO 14229-1 prescribes, whatever its bytes.

The fault memory keeps one entry per part and failure; a scan tool sees one DTC per catalogue
entry, so entries of two parts with the same DTC (two lamps open) are read as one: status bits
or-ed, occurrences added, the shortest aging counter, the earliest freeze frame.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass

from udsoncan import Dtc
from udsoncan.Response import Response
from udsoncan.services.ClearDiagnosticInformation import ClearDiagnosticInformation
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl
from udsoncan.services.ReadDataByIdentifier import ReadDataByIdentifier
from udsoncan.services.ReadDTCInformation import ReadDTCInformation
from udsoncan.services.TesterPresent import TesterPresent

from carlightd import logs
from carlightd.core.dtc import DTCStatus, lookup
from carlightd.core.memory import FreezeFrame
from carlightd.errors import CarlightdError
from carlightd.outputs.scan_tool import records
from carlightd.outputs.scan_tool.view import ScanToolLink, VehicleView

log = logs.get("carlightd.scan_tool.uds")

Code = Response.Code
Session = DiagnosticSessionControl.Session
Report = ReadDTCInformation.Subfunction

NEGATIVE_RESPONSE = 0x7F
POSITIVE_RESPONSE_OFFSET = 0x40
SUPPRESS_POSITIVE_RESPONSE = 0x80  # bit 7 of a sub-function byte (suppressPosRspMsgIndicationBit)

# DiagnosticSessionControl's timing record: P2server in ms, P2*server in units of 10 ms.
P2_SERVER_MS = 50
P2_STAR_SERVER_MS = 5000
# S3server (ISO 14229-2): a non-default session ends after this long without a request.
S3_SERVER_S = 5.0
# A transport whose `handle` has not returned within P2server sends `response_pending(request)`,
# and again before each P2*server runs out (ISO 14229-1 NRC 0x78): a clear saves the state and
# publishes it, which may take longer than a tester waits.
RESPONSE_PENDING_AFTER_S = 0.8 * P2_SERVER_MS / 1000
RESPONSE_PENDING_EVERY_S = 0.8 * P2_STAR_SERVER_MS / 1000
SESSIONS = (Session.defaultSession, Session.extendedDiagnosticSession)

TESTER_PRESENT_ZERO_SUBFUNCTION = 0x00

# The status bits the fault memory maintains (core/memory.py `status_byte`). It never tracks
# testNotCompletedSinceLastClear: a stored DTC has failed since the last clear by definition.
STATUS_AVAILABILITY_MASK = int(DTCStatus(0xFF) & ~DTCStatus.TEST_NOT_COMPLETED_SINCE_LAST_CLEAR)
DTC_FORMAT = Dtc.Format.ISO14229_1

# ClearDiagnosticInformation: the only group served is "all DTCs".
ALL_DTCS_GROUP = 0xFFFFFF

# ReadDataByIdentifier: at most this many DIDs in one request (more: 0x13).
MAX_DIDS_PER_REQUEST = 8

# Services whose sub-function byte carries suppressPosRspMsgIndicationBit. ReadDTCInformation is
# asked for its answer: its report type is taken whole, so 0x19 0x81 is an unknown report type
# (0x12), never a read without an answer.
SUPPRESSIBLE_SERVICES = frozenset(
    {DiagnosticSessionControl.request_id(), TesterPresent.request_id()}
)


class _Rejected(CarlightdError):
    """A handler refuses the request; `handle` answers 7F SID code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class DtcState:
    """What the server holds of one DTC, merged over the parts that share it."""

    status: int
    occurrences: int
    aging_counter: int
    freeze_frame: FreezeFrame | None


class _Throttled:
    """One log line for a repeated event at most every `every_s`, with how many it stands for:
    a client that floods cannot fill the disk."""

    def __init__(self, event: str, clock: Callable[[], float], every_s: float = 60.0) -> None:
        self.event = event
        self.clock = clock
        self.every_s = every_s
        self.unlogged = 0
        self.logged_at: float | None = None

    def note(self, *, warning: bool = False, **fields: object) -> None:
        self.unlogged += 1
        now = self.clock()
        if self.logged_at is not None and now - self.logged_at < self.every_s:
            return
        emit = log.warning if warning else log.info
        emit(self.event, times=self.unlogged, **fields)
        self.unlogged = 0
        self.logged_at = now


Handler = Callable[[bytes], Awaitable[bytes | None]]


class UdsServer:
    """The car's diagnostic server: DESIGN §7's services over whichever transport."""

    def __init__(self, link: ScanToolLink, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._link = link
        self._clock = clock
        self._session: int = Session.defaultSession
        self._last_request_done = clock()
        self._in_progress = 0
        # One clear at a time: a second waits for the first, then clears what is left.
        self._clear_lock = asyncio.Lock()
        self._services: dict[int, Handler] = {
            DiagnosticSessionControl.request_id(): self._session_control,
            TesterPresent.request_id(): self._tester_present,
            ReadDTCInformation.request_id(): self._read_dtc_information,
            ClearDiagnosticInformation.request_id(): self._clear_diagnostic_information,
            ReadDataByIdentifier.request_id(): self._read_data_by_identifier,
        }
        self._reports: dict[int, tuple[int, Callable[[bytes, VehicleView], bytes]]] = {
            # report type -> (exact request length, handler)
            Report.reportNumberOfDTCByStatusMask: (3, self._number_of_dtc_by_status_mask),
            Report.reportDTCByStatusMask: (3, self._dtc_by_status_mask),
            Report.reportDTCSnapshotRecordByDTCNumber: (6, self._snapshot_by_dtc_number),
            Report.reportDTCExtendedDataRecordByDTCNumber: (6, self._extended_data_by_dtc_number),
            Report.reportSupportedDTCs: (2, self._supported_dtcs),
        }
        self._failures = _Throttled("uds_request_failed", clock)
        self._clears = _Throttled("uds_clear", clock)
        self._clear_failures = _Throttled("uds_clear_failed", clock)
        self._session_changes = _Throttled("uds_session", clock, every_s=10.0)

    @property
    def session(self) -> int:
        """The active diagnostic session (0x01 default, 0x03 extended)."""
        self._end_idle_session(self._clock())
        return self._session

    async def handle(self, request: bytes) -> bytes | None:
        """One request PDU in, its response PDU out (positive or 7F SID NRC); None when no
        response is due (an empty request, a suppressed positive response). Never raises, but
        for the caller's own cancellation."""
        if not request:
            return None
        request = bytes(request)
        sid = request[0]
        self._end_idle_session(self._clock())
        self._in_progress += 1
        try:
            service = self._services.get(sid)
            if service is None:
                return negative(sid, Code.ServiceNotSupported)
            return await service(request)
        except _Rejected as rejected:
            return negative(sid, rejected.code)
        except Exception as error:
            self._failures.note(warning=True, sid=sid, error=repr(error), exc_info=error)
            return negative(sid, Code.GeneralReject)
        finally:
            self._in_progress -= 1
            self._last_request_done = self._clock()

    def _end_idle_session(self, now: float) -> None:
        if (
            self._session != Session.defaultSession
            and self._in_progress == 0
            and now - self._last_request_done >= S3_SERVER_S
        ):
            log.info("uds_session_timeout", session=self._session)
            self._session = Session.defaultSession

    # --- 0x10 DiagnosticSessionControl, 0x3E TesterPresent ---------------------------------------

    async def _session_control(self, request: bytes) -> bytes | None:
        session, suppress = subfunction(request, SESSIONS)
        expect_length(request, 2)
        if session != self._session:
            self._session_changes.note(session=session)
        self._session = session
        if suppress:
            return None
        timing = struct.pack(">HH", P2_SERVER_MS, P2_STAR_SERVER_MS // 10)
        return positive(request, bytes((session,)) + timing)

    async def _tester_present(self, request: bytes) -> bytes | None:
        zero, suppress = subfunction(request, (TESTER_PRESENT_ZERO_SUBFUNCTION,))
        expect_length(request, 2)
        return None if suppress else positive(request, bytes((zero,)))

    # --- 0x19 ReadDTCInformation -----------------------------------------------------------------

    async def _read_dtc_information(self, request: bytes) -> bytes | None:
        report, _ = subfunction(request, self._reports)
        length, answer = self._reports[report]
        expect_length(request, length)
        return positive(request, bytes((report,)) + answer(request, self._link.view()))

    def _number_of_dtc_by_status_mask(self, request: bytes, view: VehicleView) -> bytes:
        count = len(matching(dtc_memory(view), request[2]))
        return struct.pack(">BBH", STATUS_AVAILABILITY_MASK, DTC_FORMAT, count)

    def _dtc_by_status_mask(self, request: bytes, view: VehicleView) -> bytes:
        memory = dtc_memory(view)
        found = matching(memory, request[2])
        return bytes((STATUS_AVAILABILITY_MASK,)) + dtc_records(memory, found)

    def _supported_dtcs(self, request: bytes, view: VehicleView) -> bytes:
        memory = dtc_memory(view)
        return bytes((STATUS_AVAILABILITY_MASK,)) + dtc_records(memory, sorted(memory))

    def _snapshot_by_dtc_number(self, request: bytes, view: VehicleView) -> bytes:
        dtc, state = dtc_asked(request, view)
        number = request[5]
        if number not in (records.FREEZE_FRAME_RECORD, records.ALL_SNAPSHOT_RECORDS):
            raise _Rejected(Code.RequestOutOfRange)
        frame = state.freeze_frame if state is not None else None
        snapshot = b"" if frame is None else records.snapshot_record(frame)
        return dtc_record(dtc, state) + snapshot

    def _extended_data_by_dtc_number(self, request: bytes, view: VehicleView) -> bytes:
        dtc, state = dtc_asked(request, view)
        number = request[5]
        chosen = [
            record
            for record in records.EXTENDED_DATA_RECORDS
            if number in (record.number, records.ALL_EXTENDED_DATA_RECORDS)
        ]
        if not chosen:
            raise _Rejected(Code.RequestOutOfRange)
        data = b""
        if state is not None:
            counts = {
                records.OCCURRENCE_COUNTER.number: state.occurrences,
                records.AGING_COUNTER.number: state.aging_counter,
            }
            data = b"".join(
                bytes((record.number,)) + record.encode(counts[record.number]) for record in chosen
            )
        return dtc_record(dtc, state) + data

    # --- 0x14 ClearDiagnosticInformation ---------------------------------------------------------

    async def _clear_diagnostic_information(self, request: bytes) -> bytes | None:
        # groupOfDTC, and since ISO 14229-1:2020 an optional MemorySelection byte, which names a
        # user-defined memory: this server has none, so a request that carries one is refused.
        if len(request) not in (4, 5):
            raise _Rejected(Code.IncorrectMessageLengthOrInvalidFormat)
        if int.from_bytes(request[1:4], "big") != ALL_DTCS_GROUP or len(request) == 5:
            raise _Rejected(Code.RequestOutOfRange)
        async with self._clear_lock:
            try:
                cleared = await self._link.clear()
            except Exception as error:
                self._clear_failures.note(warning=True, error=repr(error))
                raise _Rejected(Code.ConditionsNotCorrect) from error
        self._clears.note(cleared=cleared)
        return positive(request, b"")

    # --- 0x22 ReadDataByIdentifier ---------------------------------------------------------------

    async def _read_data_by_identifier(self, request: bytes) -> bytes | None:
        data = request[1:]
        if not data or len(data) % 2 or len(data) // 2 > MAX_DIDS_PER_REQUEST:
            raise _Rejected(Code.IncorrectMessageLengthOrInvalidFormat)
        asked = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        # ISO 14229-1: unsupported DIDs are left out of the answer; 0x31 only if none is.
        served = [did for did in asked if did in READABLE_DIDS]
        if not served:
            raise _Rejected(Code.RequestOutOfRange)
        view = self._link.view()
        return positive(request, b"".join(did_record(did, view) for did in served))


# --- building responses ------------------------------------------------------------------------


def positive(request: bytes, data: bytes) -> bytes:
    return bytes((request[0] + POSITIVE_RESPONSE_OFFSET,)) + data


def negative(sid: int, code: int) -> bytes:
    return bytes((NEGATIVE_RESPONSE, sid, code))


# ISO 14229-1 (2020 §8.7, response behaviour to functionally addressed requests): an ECU that
# does not serve what a functional request asks stays silent, since another ECU on the bus may.
SILENT_TO_FUNCTIONAL_REQUESTS = frozenset(
    {
        Code.ServiceNotSupported,
        Code.SubFunctionNotSupported,
        Code.RequestOutOfRange,
        Code.SubFunctionNotSupportedInActiveSession,
        Code.ServiceNotSupportedInActiveSession,
    }
)


def to_functional_request(response: bytes | None) -> bytes | None:
    """What is sent of `handle`'s answer when the request was functionally addressed."""
    if (
        response is not None
        and len(response) == 3
        and response[0] == NEGATIVE_RESPONSE
        and response[2] in SILENT_TO_FUNCTIONAL_REQUESTS
    ):
        return None
    return response


def response_pending(request: bytes) -> bytes:
    """7F SID 78: the request is being handled, the answer follows (for transports: see
    RESPONSE_PENDING_AFTER_S)."""
    return negative(request[0], Code.RequestCorrectlyReceived_ResponsePending)


def subfunction(request: bytes, supported: Container[int]) -> tuple[int, bool]:
    """The sub-function and whether the positive response is suppressed; 0x13 if there is no
    sub-function byte, 0x12 if it is not one this server supports."""
    if len(request) < 2:
        raise _Rejected(Code.IncorrectMessageLengthOrInvalidFormat)
    value = request[1]
    suppress = False
    if request[0] in SUPPRESSIBLE_SERVICES:
        suppress = bool(value & SUPPRESS_POSITIVE_RESPONSE)
        value &= ~SUPPRESS_POSITIVE_RESPONSE
    if value not in supported:
        raise _Rejected(Code.SubFunctionNotSupported)
    return value, suppress


def expect_length(request: bytes, length: int) -> None:
    if len(request) != length:
        raise _Rejected(Code.IncorrectMessageLengthOrInvalidFormat)


# --- the DTC memory as a scan tool sees it -----------------------------------------------------


def dtc_memory(view: VehicleView) -> dict[int, DtcState | None]:
    """Every DTC the server knows (the supported ones, and any stored one besides), with its
    merged state, or None if nothing is stored for it."""
    memory: dict[int, DtcState | None] = {entry.uds_code: None for entry in view.supported}
    for stored in view.dtcs:
        try:
            entry = lookup(stored.kind, stored.failure)
        except KeyError:  # a failure the catalogue does not name: no DTC to report it by
            continue
        state = DtcState(
            stored.dtc_status & STATUS_AVAILABILITY_MASK,
            stored.occurrences,
            stored.aging_counter,
            stored.freeze_frame,
        )
        known = memory.get(entry.uds_code)
        memory[entry.uds_code] = state if known is None else _merged(known, state)
    return memory


def _merged(a: DtcState, b: DtcState) -> DtcState:
    frames = [frame for frame in (a.freeze_frame, b.freeze_frame) if frame is not None]
    return DtcState(
        a.status | b.status,
        a.occurrences + b.occurrences,
        min(a.aging_counter, b.aging_counter),
        min(frames, key=lambda frame: frame.at) if frames else None,
    )


def matching(memory: dict[int, DtcState | None], mask: int) -> list[int]:
    """The DTCs whose status has a bit of `mask` set, in DTC order."""
    return sorted(dtc for dtc, state in memory.items() if state is not None and state.status & mask)


def dtc_record(dtc: int, state: DtcState | None) -> bytes:
    """DTCAndStatusRecord: the three DTC bytes and the status byte (0: nothing stored)."""
    return dtc.to_bytes(3, "big") + bytes((0 if state is None else state.status,))


def dtc_records(memory: dict[int, DtcState | None], dtcs: Iterable[int]) -> bytes:
    return b"".join(dtc_record(dtc, memory[dtc]) for dtc in dtcs)


def dtc_asked(request: bytes, view: VehicleView) -> tuple[int, DtcState | None]:
    """The DTC named by bytes 2-4 of a request and its state; 0x31 if the server has no such
    DTC."""
    dtc = int.from_bytes(request[2:5], "big")
    memory = dtc_memory(view)
    if dtc not in memory:
        raise _Rejected(Code.RequestOutOfRange)
    return dtc, memory[dtc]


# --- the data identifiers of 0x22 --------------------------------------------------------------

READABLE_DIDS = frozenset({records.VIN_DID, *(field.did for field in records.LIVE_FIELDS)})
_LIVE_FIELDS = {field.did: field for field in records.LIVE_FIELDS}


def did_record(did: int, view: VehicleView) -> bytes:
    """DID and its data; 0x22 if the value is not available now (no cycle yet, no reading)."""
    if did == records.VIN_DID:
        return struct.pack(">H", did) + vin_bytes(view.vin)
    field = _LIVE_FIELDS[did]
    value = None if view.telemetry is None else records.live_values(view.telemetry)[did]
    if field.raw(value) == field.not_available:
        raise _Rejected(Code.ConditionsNotCorrect)
    return struct.pack(">H", did) + field.encode(value)


def vin_bytes(vin: str) -> bytes:
    try:
        encoded = vin.encode("ascii")
    except UnicodeEncodeError:
        encoded = b""
    if len(encoded) != records.VIN_LENGTH:
        raise _Rejected(Code.ConditionsNotCorrect)  # the configuration validates it: never so
    return encoded
