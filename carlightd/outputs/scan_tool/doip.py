"""UDS over DoIP (ISO 13400-2, protocol versions 2 (2012) and 3 (2019)): a DoIP node.

- TCP_DATA on host:port: routing activation, diagnostic messages (acknowledged, then answered
  by `handle`, with 'response pending' while a slow answer is awaited), alive check, entity
  status and power mode; every header or payload error is answered with the standard's
  negative acknowledgement. Replies are in the protocol version of the request.
- UDP on the same port: vehicle identification (plain, by EID, by VIN; version 0xFF accepted
  there and answered in version 2), entity status and power mode, as doipclient's `get_entity`
  and `request_*` methods send them. Garbage is NACKed, and replies are rationed per second.

Everything a client sends is bounded: the payload size, the number of sockets, the time to
activate routing and the idle time after, and the time a reply may wait for a client that does
not read. One connection is one task; a slow or hostile one never holds up another.

Sockets are handled as ISO 13400-2 describes, so that silent testers cannot lock others out: at
most `max_sockets` are registered (routing activated); besides them up to `max_sockets` more may
be open and not yet activated (they close after `initial_inactivity`), so never more than twice
`max_sockets` in all. A routing activation that finds every socket registered sends an alive
check to all of them at once and closes those that do not answer within `alive_check_timeout`;
if none was freed, it is denied (0x01, all sockets registered and active). The last look at the
free places and the registration happen with no await between them, so concurrent activations
never register more than `max_sockets`; they wait for their alive checks side by side, never in
a queue (a queue would let a chain of silent sockets hold every waiting connection up).

The entity identifies itself with EID = GID = 02 43 4C 44 + the logical address (a locally
administered MAC-style number, "CLD" for carlightd): it is the vehicle's only DoIP node, so its
group is itself.

doipclient's `messages` pack and parse the payloads. Its functions carry no annotations, so each
call is marked `no-untyped-call`; the generic header is packed and checked here (its `Parser` is
a client's: it neither bounds a payload nor reports a bad header).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from doipclient import messages as m

from carlightd import logs
from carlightd.outputs.scan_tool import uds
from carlightd.outputs.scan_tool.tally import Tally
from carlightd.outputs.scan_tool.view import VehicleView

log = logs.get("carlightd.scan_tool.doip")

Handle = Callable[[bytes], Awaitable[bytes | None]]

HEADER = struct.Struct("!BBHL")  # version, inverse version, payload type, payload length
PROTOCOL_VERSIONS = frozenset({0x02, 0x03})
ANY_VERSION = 0xFF  # accepted in vehicle identification requests only
OWN_VERSION = 0x02  # what we answer in when the request's version tells us nothing
FUNCTIONAL_ADDRESS = 0xE400
TESTER_ADDRESSES = range(0x0E00, 0x1000)
DOIP_NODE = 0x01
POWER_MODE_READY = 0x01
EID_PREFIX = b"\x02CLD"
SUPPORTED_ACTIVATIONS = frozenset({0x00, 0x01})  # default, WWH-OBD

# Payload types (ISO 13400-2 table 17).
GENERIC_NACK = 0x0000
VEHICLE_ID = 0x0001
VEHICLE_ID_BY_EID = 0x0002
VEHICLE_ID_BY_VIN = 0x0003
ANNOUNCEMENT = 0x0004
ROUTING_ACTIVATION = 0x0005
ALIVE_CHECK_REQUEST = 0x0007
ALIVE_CHECK_RESPONSE = 0x0008
ENTITY_STATUS = 0x4001
POWER_MODE = 0x4003
DIAGNOSTIC = 0x8001

# Generic header NACK codes and what follows them.
INCORRECT_PATTERN = m.GenericDoIPNegativeAcknowledge.NackCodes.IncorrectPatternFormat
UNKNOWN_PAYLOAD_TYPE = m.GenericDoIPNegativeAcknowledge.NackCodes.UnknownPayloadType
MESSAGE_TOO_LARGE = m.GenericDoIPNegativeAcknowledge.NackCodes.MessageTooLarge
INVALID_PAYLOAD_LENGTH = m.GenericDoIPNegativeAcknowledge.NackCodes.InvalidPayloadLength
Activation = m.RoutingActivationResponse.ResponseCode
DiagnosticNack = m.DiagnosticMessageNegativeAcknowledgement.NackCodes

# The payload lengths each request may have; a diagnostic message has SA, TA and >= 1 byte.
TCP_LENGTHS: dict[int, frozenset[int]] = {
    ROUTING_ACTIVATION: frozenset({7, 11}),
    ALIVE_CHECK_REQUEST: frozenset({0}),
    ALIVE_CHECK_RESPONSE: frozenset({2}),
    ENTITY_STATUS: frozenset({0}),
    POWER_MODE: frozenset({0}),
}
UDP_LENGTHS: dict[int, frozenset[int]] = {
    VEHICLE_ID: frozenset({0}),
    VEHICLE_ID_BY_EID: frozenset({6}),
    VEHICLE_ID_BY_VIN: frozenset({17}),
    ENTITY_STATUS: frozenset({0}),
    POWER_MODE: frozenset({0}),
}
MIN_DIAGNOSTIC_LENGTH = 5
# Never answered on UDP, not even with a NACK: two entities would NACK each other forever.
UDP_SILENT = frozenset({GENERIC_NACK, ANNOUNCEMENT})
DISCARD_CHUNK = 65536
GONE_POLL_S = 0.1  # while a slow answer is awaited, how often to look whether the tester left
CLOSE_GRACE_S = 2.0  # how long close() lets connections, then requests being answered, end
# A registered socket with this much unread output is not reading: an alive check counts it silent
# (a client that answers alive checks blindly cannot make us queue them without bound).
ALIVE_CHECK_BACKLOG = 64 * 1024
# How often one routing activation looks for a free place again after an alive check freed one
# that a concurrent activation took first.
REGISTRATION_ATTEMPTS = 4


def generic_nack(code: int) -> m.DoIPMessage:
    return m.GenericDoIPNegativeAcknowledge(code)  # type: ignore[no-untyped-call]


def frame(version: int, message: m.DoIPMessage) -> bytes:
    """One DoIP message with its generic header."""
    packable: Any = message  # every concrete message has `pack`; the base class declares none
    payload = bytes(packable.pack())
    payload_type = m.payload_message_to_type[type(message)]
    return HEADER.pack(version, version ^ 0xFF, payload_type, len(payload)) + payload


def valid_pattern(version: int, inverse: int, *, vehicle_identification: bool = False) -> bool:
    if inverse != version ^ 0xFF:
        return False
    return version in PROTOCOL_VERSIONS or (vehicle_identification and version == ANY_VERSION)


@dataclass(eq=False)
class Connection:
    """One TCP_DATA socket and the tester registered on it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_at: float
    task: asyncio.Task[None] | None = None
    source_address: int | None = None  # set by a successful routing activation: registered
    last_received: float = 0.0
    version: int = OWN_VERSION  # of the client's last message: an alive check is sent in it
    # The alive check awaiting its response: done when the response came or the socket closed.
    alive_check: asyncio.Future[None] | None = None
    answering: bool = False  # a request of its tester is being answered
    closed: bool = False

    @property
    def registered(self) -> bool:
        return self.source_address is not None


class DoipServer:
    """A DoIP node serving one ECU's UDS server (`handle`) on TCP and UDP host:port."""

    name = "doip"

    def __init__(
        self,
        handle: Handle,
        view: Callable[[], VehicleView],
        *,
        host: str = "127.0.0.1",
        port: int = 13400,
        logical_address: int = 0x0740,
        max_sockets: int = 8,
        max_request_size: int = 4096,
        max_payload: int = 8192,
        initial_inactivity: float = 2.0,
        general_inactivity: float = 300.0,
        alive_check_timeout: float = 0.5,
        send_timeout: float = 5.0,
        handle_timeout: float = 30.0,
        udp_replies_per_second: int = 100,
    ) -> None:
        """`max_request_size` bounds a UDS request (larger: diagnostic NACK 0x04) and is
        advertised in the entity status; `max_payload` bounds any DoIP payload (larger: generic
        NACK 0x02, the payload skipped unread). `send_timeout` is how long a reply may wait for
        a client that does not read before that client is dropped; `handle_timeout` bounds
        one answer."""
        self._handle = handle
        self._view = view
        self.host = host
        self.port = port
        self.logical_address = logical_address
        self.eid = EID_PREFIX + logical_address.to_bytes(2, "big")
        self.max_sockets = max_sockets
        self.max_request_size = max_request_size
        self.max_payload = max(max_payload, max_request_size + 4)
        self.initial_inactivity = initial_inactivity
        self.general_inactivity = general_inactivity
        self.alive_check_timeout = alive_check_timeout
        self.send_timeout = send_timeout
        self.handle_timeout = handle_timeout
        self.udp_replies_per_second = udp_replies_per_second
        self.tally = Tally(log)
        self._connections: set[Connection] = set()
        self._handling: set[asyncio.Future[bytes | None]] = set()  # requests being answered
        self._tcp: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_window = (0.0, 0)  # second started, replies sent in it
        self._closing = False

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def registered_connections(self) -> int:
        return sum(connection.registered for connection in self._connections)

    @property
    def max_open_sockets(self) -> int:
        """`max_sockets` registered and as many more waiting for their routing activation."""
        return 2 * self.max_sockets

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        tcp = await asyncio.start_server(self._accept, self.host, self.port)
        port = int(tcp.sockets[0].getsockname()[1])
        try:
            udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Discovery(self), local_addr=(self.host, port)
            )
        except BaseException:
            tcp.close()
            await tcp.wait_closed()
            raise
        self._tcp, self._udp, self.port = tcp, udp, port
        self._closing = False
        where = f"{self.host}:{port}"
        log.info("doip_serving", where=where, logical_address=f"0x{self.logical_address:04X}")
        return where

    async def close(self) -> None:
        tcp, udp = self._tcp, self._udp
        self._tcp = self._udp = None
        self._closing = True
        if udp is not None:
            udp.close()
        if tcp is not None:
            tcp.close()
        # Aborting a socket ends its connection's task (end of stream, a lost connection in a
        # drain); cancelling the task instead would make asyncio 3.11's streams log an error.
        tasks: set[asyncio.Task[None]] = set()
        for connection in list(self._connections):
            self._drop(connection)
            if connection.task is not None:
                tasks.add(connection.task)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_GRACE_S)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._handling:  # requests whose tester has gone: a moment to finish, then cancelled
            _, late = await asyncio.wait(set(self._handling), timeout=CLOSE_GRACE_S)
            for request in late:
                request.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()
            if self.tally.counts:
                log.info("doip_closed", **dict(self.tally.counts))

    # --- TCP_DATA -------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        waiting = len(self._connections) - self.registered_connections
        if (
            self._closing
            or waiting >= self.max_sockets
            or len(self._connections) >= self.max_open_sockets
        ):
            self.tally.note("doip_socket_refused", open=len(self._connections), waiting=waiting)
            writer.transport.abort()
            return
        now = asyncio.get_running_loop().time()
        connection = Connection(reader, writer, opened_at=now, last_received=now)
        connection.task = asyncio.current_task()
        self._connections.add(connection)
        try:
            await self._serve(connection)
        except TimeoutError:  # before OSError, of which it is a subclass
            self.tally.note(
                "doip_inactivity_close", activated=connection.source_address is not None
            )
        except (asyncio.IncompleteReadError, OSError) as error:
            if not connection.closed:
                self.tally.note("doip_truncated_or_reset", error=type(error).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must cost one connection, never the server
            self.tally.note("doip_connection_failed", error=repr(error), exc_info=True)
        finally:
            self._drop(connection)

    async def _serve(self, connection: Connection) -> None:
        while not connection.closed:
            received = await self._receive(connection)
            if received is None:
                return
            version, payload_type, payload = received
            connection.last_received = asyncio.get_running_loop().time()
            connection.version = version
            await self._dispatch(connection, version, payload_type, payload)

    def _deadline(self, connection: Connection) -> float:
        """Before routing activation the socket has `initial_inactivity` in all; after it,
        `general_inactivity` from the last message."""
        if connection.source_address is None:
            start, allowed = connection.opened_at, self.initial_inactivity
        else:
            start, allowed = connection.last_received, self.general_inactivity
        return start + allowed

    async def _receive(self, connection: Connection) -> tuple[int, int, bytes] | None:
        """The next well-formed message, None when the socket is to close; header errors are
        answered here, and a payload that is not to be read is skipped."""
        reader = connection.reader
        while True:
            async with asyncio.timeout_at(self._deadline(connection)):
                header = await reader.read(HEADER.size)
                if not header:
                    return None  # the client closed between messages: fine
                if len(header) < HEADER.size:
                    header += await reader.readexactly(HEADER.size - len(header))
                version, inverse, payload_type, length = HEADER.unpack(header)
                if not valid_pattern(version, inverse):
                    self.tally.note("doip_incorrect_pattern", header=header.hex())
                    await self._nack_and_close(connection, OWN_VERSION, INCORRECT_PATTERN)
                    return None
                if payload_type not in TCP_LENGTHS and payload_type != DIAGNOSTIC:
                    self.tally.note("doip_unknown_payload_type", payload_type=payload_type)
                    await self._send(connection, version, generic_nack(UNKNOWN_PAYLOAD_TYPE))
                    await self._discard(reader, length)
                    continue
                if length > self.max_payload:
                    self.tally.note("doip_message_too_large", length=length)
                    await self._send(connection, version, generic_nack(MESSAGE_TOO_LARGE))
                    await self._discard(reader, length)
                    continue
                if not valid_length(payload_type, length, TCP_LENGTHS):
                    self.tally.note(
                        "doip_invalid_payload_length", payload_type=payload_type, length=length
                    )
                    await self._nack_and_close(connection, version, INVALID_PAYLOAD_LENGTH)
                    return None
                payload = await reader.readexactly(length)
            return version, payload_type, payload

    async def _discard(self, reader: asyncio.StreamReader, length: int) -> None:
        while length > 0:
            chunk = await reader.read(min(length, DISCARD_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            length -= len(chunk)

    async def _dispatch(
        self, connection: Connection, version: int, payload_type: int, payload: bytes
    ) -> None:
        if payload_type == ROUTING_ACTIVATION:
            await self._activate_routing(connection, version, payload)
        elif payload_type == DIAGNOSTIC:
            await self._diagnose(connection, version, payload)
        elif payload_type == ALIVE_CHECK_REQUEST:
            alive = m.AliveCheckResponse(self.logical_address)  # type: ignore[no-untyped-call]
            await self._send(connection, version, alive)
        elif payload_type == ALIVE_CHECK_RESPONSE:
            if connection.alive_check is not None and not connection.alive_check.done():
                connection.alive_check.set_result(None)
        else:
            reply = self._status_reply(payload_type)
            if reply is not None:
                await self._send(connection, version, reply)

    async def _activate_routing(self, connection: Connection, version: int, payload: bytes) -> None:
        request = m.RoutingActivationRequest.unpack(  # type: ignore[no-untyped-call]
            payload, len(payload)
        )
        source: int = request.source_address
        try:
            activation_type = int(request.activation_type)
        except ValueError:  # not a type the standard knows
            activation_type = -1

        async def answer(code: Activation) -> None:
            response = m.RoutingActivationResponse(  # type: ignore[no-untyped-call]
                source, self.logical_address, code
            )
            await self._send(connection, version, response)
            if code != Activation.Success:  # every denial we give closes the socket
                self.tally.note("doip_routing_denied", source=source, code=int(code))
                await self._close_gracefully(connection)

        if source not in TESTER_ADDRESSES:
            await answer(Activation.DeniedUnknownSourceAddress)
        elif activation_type not in SUPPORTED_ACTIVATIONS:
            await answer(Activation.DeniedUnsupportedActivationType)
        elif connection.registered:  # again on a registered socket: the same tester or none
            same = connection.source_address == source
            await answer(Activation.Success if same else Activation.DeniedSADoesNotMatch)
        else:
            code = await self._register(connection, source)
            if code is not None:
                await answer(code)

    async def _register(self, connection: Connection, source: int) -> Activation | None:
        """ISO 13400-2 socket handling for a socket not yet registered; None when it closed
        meanwhile. A socket holding the same tester address, or (when all `max_sockets` are
        registered) every registered socket, is alive-checked first; those that stay silent are
        closed, so a tester that lost its connection can come back and silent ones cannot lock
        the others out. What an alive check freed may be taken by a concurrent activation:
        then the places are looked at again, a bounded number of times."""
        for _ in range(REGISTRATION_ATTEMPTS):
            if connection.closed or self._closing:
                return None
            holder = next(
                (other for other in self._connections if other.source_address == source), None
            )
            registered = [other for other in self._connections if other.registered]
            if holder is None and len(registered) < self.max_sockets:
                connection.source_address = source  # no await since the look: no over-booking
                return Activation.Success
            if holder is not None:
                if await self._alive_check([holder], "doip_silent_holder_closed"):
                    return Activation.DeniedSARegistered
            elif len(await self._alive_check(registered, "doip_silent_socket_closed")) == len(
                registered
            ):
                return Activation.DeniedAllSocketsRegisteredActive
        return None if connection.closed else Activation.DeniedAllSocketsRegisteredActive

    async def _alive_check(self, connections: list[Connection], silent: str) -> list[Connection]:
        """An alive check request to each socket at once (joining one already under way);
        those that have not answered within `alive_check_timeout` are closed (tallied as
        `silent`). The ones still open. A socket whose tester's request is being answered is
        alive: it has just spoken, and its task is not reading until the answer is out."""
        alive = [other for other in connections if other.answering and not other.closed]
        asked = {
            self._ask_alive(other): other
            for other in connections
            if not other.answering and not other.closed
        }
        if asked:
            await asyncio.wait(asked, timeout=self.alive_check_timeout)
        for check, other in asked.items():
            if other.closed:
                continue  # it went by itself, or another alive check closed it
            if check.done():
                alive.append(other)
            else:
                self.tally.note(silent, source=other.source_address)
                self._drop(other)
        return alive

    def _ask_alive(self, connection: Connection) -> asyncio.Future[None]:
        """The connection's alive check under way, or a new one sent now. A client that leaves
        `ALIVE_CHECK_BACKLOG` unread is not reading: it is sent nothing more: it stays silent."""
        check = connection.alive_check
        if check is None or check.done():
            check = connection.alive_check = asyncio.get_running_loop().create_future()
            if connection.writer.transport.get_write_buffer_size() < ALIVE_CHECK_BACKLOG:
                connection.writer.write(frame(connection.version, m.AliveCheckRequest()))
        return check

    async def _diagnose(self, connection: Connection, version: int, payload: bytes) -> None:
        message = m.DiagnosticMessage.unpack(  # type: ignore[no-untyped-call]
            payload, len(payload)
        )
        source: int = message.source_address
        target: int = message.target_address
        request = bytes(message.user_data)

        async def nack(code: DiagnosticNack) -> None:
            self.tally.note("doip_diagnostic_nack", source=source, target=target, code=int(code))
            reply = m.DiagnosticMessageNegativeAcknowledgement(  # type: ignore[no-untyped-call]
                target, source, code
            )
            await self._send(connection, version, reply)

        if connection.source_address is None or source != connection.source_address:
            await nack(DiagnosticNack.InvalidSourceAddress)
            await self._close_gracefully(connection)
            return
        if target not in (self.logical_address, FUNCTIONAL_ADDRESS):
            await nack(DiagnosticNack.UnknownTargetAddress)
            return
        if len(request) > self.max_request_size:
            await nack(DiagnosticNack.DiagnosticMessageTooLarge)
            return
        ack = m.DiagnosticMessagePositiveAcknowledgement(  # type: ignore[no-untyped-call]
            target, source, 0x00
        )
        if not await self._send(connection, version, ack):
            return

        async def send(response: bytes) -> bool:
            reply = m.DiagnosticMessage(  # type: ignore[no-untyped-call]
                self.logical_address, source, response
            )
            return await self._send(connection, version, reply)

        def gone() -> bool:
            return connection.closed or connection.reader.at_eof()

        connection.answering = True
        try:
            response = await self._answer(request, send, gone)
            if target == FUNCTIONAL_ADDRESS:
                response = uds.to_functional_request(response)
            if response:
                await send(response)
        finally:
            connection.answering = False

    async def _answer(
        self, request: bytes, send: Callable[[bytes], Awaitable[bool]], gone: Callable[[], bool]
    ) -> bytes | None:
        """`handle`'s answer. While it is not ready, 'response pending' (7F SID 78) goes out
        after P2server and again before each P2*server runs out, as uds.py asks of transports.
        The request runs to its end even if the tester goes (a clear is not left half done);
        one that outlasts `handle_timeout` is cancelled."""
        task = asyncio.ensure_future(self._handle(request))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handle_timeout
        pending_at = loop.time() + uds.RESPONSE_PENDING_AFTER_S
        while not task.done():
            # In short steps, to notice a tester that has gone (and free its socket) at once.
            wake = min(pending_at, deadline, loop.time() + GONE_POLL_S)
            await asyncio.wait({task}, timeout=max(0.0, wake - loop.time()))
            if task.done():
                break
            if gone():
                return None
            if loop.time() >= deadline:
                task.cancel()
                self.tally.note("doip_handler_timeout", request=request[:8].hex())
                return None
            if loop.time() >= pending_at:
                if not await send(uds.response_pending(request)):
                    return None
                pending_at = loop.time() + uds.RESPONSE_PENDING_EVERY_S
        try:
            return task.result()
        except Exception as error:  # the UDS server promises not to raise; if it does, no answer
            self.tally.note("doip_handler_failed", error=repr(error))
            return None

    def _status_reply(self, payload_type: int) -> m.DoIPMessage | None:
        if payload_type == ENTITY_STATUS:
            # Every open TCP_DATA socket against the most that may be open (registered ones and
            # those waiting to activate routing), so a tester never reads more open than allowed.
            return m.EntityStatusResponse(  # type: ignore[no-untyped-call]
                DOIP_NODE, self.max_open_sockets, len(self._connections), self.max_request_size
            )
        if payload_type == POWER_MODE:
            return m.DiagnosticPowerModeResponse(  # type: ignore[no-untyped-call]
                POWER_MODE_READY
            )
        return None

    # --- sending and closing --------------------------------------------------------------------

    async def _send(self, connection: Connection, version: int, message: m.DoIPMessage) -> bool:
        """Write one message; a client that does not take it within `send_timeout` (its receive
        window and our buffers full) is dropped. False when the message did not go."""
        if connection.closed:
            return False
        try:
            connection.writer.write(frame(version, message))
            async with asyncio.timeout(self.send_timeout):
                await connection.writer.drain()
        except TimeoutError:
            self.tally.note("doip_client_not_reading", source=connection.source_address)
            self._drop(connection)
            return False
        except OSError:  # reset under our feet
            self._drop(connection)
            return False
        return True

    async def _nack_and_close(self, connection: Connection, version: int, code: int) -> None:
        await self._send(connection, version, generic_nack(code))
        await self._close_gracefully(connection)

    async def _close_gracefully(self, connection: Connection) -> None:
        """Close after a last message: end our side, then skip what the client still sends
        until it closes too (briefly, and bounded), so that closing with unread bytes does not
        reset the connection and destroy the message before the client has read it."""
        if connection.closed:
            return
        with contextlib.suppress(OSError, TimeoutError):
            if connection.writer.can_write_eof():
                connection.writer.write_eof()
            async with asyncio.timeout(min(self.send_timeout, 1.0)):
                while await connection.reader.read(DISCARD_CHUNK):
                    pass
        self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        """Forget the connection and close its socket at once, whatever it still holds."""
        connection.closed = True
        self._connections.discard(connection)
        connection.writer.transport.abort()
        if connection.alive_check is not None and not connection.alive_check.done():
            connection.alive_check.set_result(None)  # no alive check waits for a closed socket

    # --- UDP ------------------------------------------------------------------------------------

    def answer_datagram(self, data: bytes) -> bytes | None:
        """The reply to one UDP datagram, or None (not ours to answer, or over the budget)."""
        if len(data) < HEADER.size:
            self.tally.note("doip_udp_short", length=len(data))
            return None
        version, inverse, payload_type, length = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        identification = payload_type in (VEHICLE_ID, VEHICLE_ID_BY_EID, VEHICLE_ID_BY_VIN)
        if not valid_pattern(version, inverse, vehicle_identification=identification):
            self.tally.note("doip_udp_incorrect_pattern", header=data[: HEADER.size].hex())
            return self._udp_reply(OWN_VERSION, generic_nack(INCORRECT_PATTERN))
        reply_version = OWN_VERSION if version == ANY_VERSION else version
        if payload_type in UDP_SILENT:
            return None
        if payload_type not in UDP_LENGTHS:
            self.tally.note("doip_udp_unknown_payload_type", payload_type=payload_type)
            return self._udp_reply(reply_version, generic_nack(UNKNOWN_PAYLOAD_TYPE))
        if length > self.max_payload:
            self.tally.note("doip_udp_message_too_large", length=length)
            return self._udp_reply(reply_version, generic_nack(MESSAGE_TOO_LARGE))
        if length != len(payload) or not valid_length(payload_type, length, UDP_LENGTHS):
            self.tally.note("doip_udp_invalid_payload_length", length=length, got=len(payload))
            return self._udp_reply(reply_version, generic_nack(INVALID_PAYLOAD_LENGTH))
        if not identification:
            status = self._status_reply(payload_type)
            return None if status is None else self._udp_reply(reply_version, status)
        announcement = self._announcement(payload_type, payload)
        return None if announcement is None else self._udp_reply(reply_version, announcement)

    def _announcement(self, payload_type: int, payload: bytes) -> m.DoIPMessage | None:
        """The vehicle identification response, None when the request names another vehicle."""
        vin = vin_field(self._view().vin)
        if payload_type == VEHICLE_ID_BY_EID and payload != self.eid:
            return None
        if payload_type == VEHICLE_ID_BY_VIN and payload != vin.encode("ascii"):
            return None
        synchronized = m.VehicleIdentificationResponse.SynchronizationStatusCodes.Synchronized
        return m.VehicleIdentificationResponse(  # type: ignore[no-untyped-call]
            vin,
            self.logical_address,
            self.eid,
            self.eid,
            m.VehicleIdentificationResponse.FurtherActionCodes.NoFurtherActionRequired,
            synchronized,
        )

    def _udp_reply(self, version: int, message: m.DoIPMessage) -> bytes | None:
        """At most `udp_replies_per_second`: a flood of datagrams is not echoed back."""
        now = time.monotonic()
        started, sent = self._udp_window
        if now - started >= 1.0:
            started, sent = now, 0
        if sent >= self.udp_replies_per_second:
            self.tally.note("doip_udp_over_budget")
            return None
        self._udp_window = (started, sent + 1)
        return frame(version, message)


def valid_length(payload_type: int, length: int, lengths: dict[int, frozenset[int]]) -> bool:
    if payload_type == DIAGNOSTIC:
        return length >= MIN_DIAGNOSTIC_LENGTH
    return length in lengths.get(payload_type, frozenset())


def vin_field(vin: str) -> str:
    """The 17-character VIN of an announcement; the standard's 'not set' value (17 x 0x00) for
    one that is not 17 printable ASCII characters."""
    if len(vin) == 17 and vin.isascii() and vin.isprintable():
        return vin
    return "\x00" * 17


class _Discovery(asyncio.DatagramProtocol):
    def __init__(self, server: DoipServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            reply = self.server.answer_datagram(data)
        except Exception as error:  # one bad datagram (or a view that failed) costs one answer
            self.server.tally.note("doip_udp_failed", error=repr(error))
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable after a reply to a client that has gone: nothing to do.
        self.server.tally.note("doip_udp_error", error=repr(exc))
