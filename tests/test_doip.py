"""The DoIP node (ISO 13400-2) against real clients: doipclient and udsoncan for what a workshop
tester does, raw sockets for every error path, hypothesis for bytes nobody planned for.

The server runs in the test's loop on port 0; doipclient is blocking, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import doipclient.client
import pytest
import udsoncan
from doipclient.client import DoIPClient
from doipclient.connectors import DoIPClientUDSConnector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from udsoncan.client import Client
from udsoncan.Response import Response

from carlightd.core.dtc import DTCStatus
from carlightd.outputs.scan_tool.doip import DoipServer
from carlightd.outputs.scan_tool.uds import UdsServer
from carlightd.outputs.scan_tool.view import VehicleView
from tests.doip_wire import HEADER, frame, well_formed_replies
from tests.scan_tool_memories import BRAKE_OPEN, CONFIRMED, BrakeLampMemory

VIN = "WCARLIGHT0D000042"
ECU = 0x0740
TESTER = 0x0E00
BIG_RESPONSE = 4000  # what the test handler answers to ReadMemoryByAddress (0x23)


def view() -> VehicleView:
    return VehicleView(vin=VIN, supported=())


async def tiny_uds(request: bytes) -> bytes | None:
    """Enough of a UDS server to carry requests over the transport."""
    if request[:1] == b"\x3e":
        return None if request[1:2] == b"\x80" else b"\x7e\x00"
    if request == b"\x22\xf1\x90":
        return b"\x62\xf1\x90" + VIN.encode()
    if request[:1] == b"\x23":
        return b"\x63" + bytes(BIG_RESPONSE - 1)
    return b"\x7f" + request[:1] + b"\x11"


@contextlib.asynccontextmanager
async def serving(
    handle: Callable[[bytes], Awaitable[bytes | None]] = tiny_uds,
    vehicle: Callable[[], VehicleView] = view,
    **options: Any,
) -> AsyncIterator[DoipServer]:
    server = DoipServer(handle, vehicle, host="127.0.0.1", port=0, logical_address=ECU, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def server() -> AsyncIterator[DoipServer]:
    async with serving(initial_inactivity=5.0, alive_check_timeout=0.3) as started:
        yield started


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


def activation(source: int = TESTER, activation_type: int = 0) -> bytes:
    return frame(0x0005, struct.pack("!HBL", source, activation_type, 0))


def diagnostic(data: bytes, source: int = TESTER, target: int = ECU) -> bytes:
    return frame(0x8001, struct.pack("!HH", source, target) + data)


class Raw:
    """A tester on a bare TCP socket: it sends whatever bytes the test likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> tuple[int, int, bytes]:
        """The next message: (version, payload type, payload)."""
        async with asyncio.timeout(5):
            version, inverse, payload_type, length = HEADER.unpack(
                await self.reader.readexactly(HEADER.size)
            )
            assert inverse == version ^ 0xFF
            return version, payload_type, await self.reader.readexactly(length)

    async def expect(self, payload_type: int) -> bytes:
        got_type = -1
        while got_type != payload_type:
            _, got_type, payload = await self.receive()
            assert got_type in (payload_type, 0x8002), f"0x{got_type:04X}: {payload.hex()}"
        return payload

    async def activate(self, source: int = TESTER, activation_type: int = 0) -> int:
        await self.send(activation(source, activation_type))
        payload = await self.expect(0x0006)
        client, entity, code = struct.unpack_from("!HHB", payload)
        assert (client, entity) == (source, ECU)
        return int(code)

    async def closed_by_server(self) -> bool:
        """True once the server has closed the socket (end of stream or reset)."""
        try:
            async with asyncio.timeout(5):
                while await self.reader.read(4096):
                    pass
        except ConnectionResetError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    tester = await Raw.connect(port)
    try:
        yield tester
    finally:
        await tester.close()


def udp_exchange(port: int, datagrams: list[bytes], replies: int) -> list[bytes]:
    """Send each datagram, then collect `replies` answers (in order: loopback keeps it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
        return [sock.recv(4096) for _ in range(replies)]


def uds_session(port: int, version: int) -> dict[str, Any]:
    """A workshop tester's round: doipclient (routing activation at connect) under udsoncan."""
    config = udsoncan.configs.default_client_config.copy()
    config["data_identifiers"] = {0xF190: udsoncan.AsciiCodec(17)}
    with DoIPClient(  # type: ignore[no-untyped-call]
        "127.0.0.1", ECU, tcp_port=port, udp_port=port, protocol_version=version
    ) as doip:
        connection = DoIPClientUDSConnector(doip)  # type: ignore[no-untyped-call]
        with Client(connection, config=config, request_timeout=5) as client:
            client.tester_present()
            vin = client.read_data_by_identifier(0xF190).service_data.values[0xF190]
            with pytest.raises(udsoncan.exceptions.NegativeResponseException) as refused:
                client.ecu_reset(1)
        return {
            "vin": vin,
            "nrc": refused.value.response.code,
            "alive": doip.request_alive_check().source_address,
            "status": doip.request_entity_status(),
            "power": doip.request_diagnostic_power_mode().diagnostic_power_mode,
            "identification": doip.request_vehicle_identification(),
        }


# --- what a tester does ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0x02, 0x03])
async def test_uds_round_trip_through_doipclient_and_udsoncan(
    server: DoipServer, version: int
) -> None:
    result = await asyncio.to_thread(uds_session, server.port, version)
    assert result["vin"] == VIN
    assert result["nrc"] == Response.Code.ServiceNotSupported
    assert result["alive"] == ECU
    assert (
        result["status"].max_concurrent_sockets == 16
    )  # 8 registered and 8 waiting to activate routing
    assert result["status"].max_data_size == 4096
    assert result["power"] == 0x01  # ready
    assert result["identification"].vin == VIN


# get_entity sends to the standard port (a module constant) and leaves its socket to the collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_get_entity_finds_the_vehicle(
    server: DoipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doipclient.client, "UDP_DISCOVERY", server.port)
    for query in ({}, {"vin": VIN}, {"eid": server.eid}):
        _, announcement = await asyncio.to_thread(DoIPClient.get_entity, "127.0.0.1", **query)
        assert announcement.vin == VIN
        assert announcement.logical_address == ECU
        assert announcement.eid == announcement.gid == b"\x02CLD\x07\x40"
        assert announcement.further_action_required == 0x00


async def test_vehicle_identification_answers_in_the_testers_version(server: DoipServer) -> None:
    requests = [frame(0x0001, version=version) for version in (0x02, 0x03, 0xFF)]
    replies = await asyncio.to_thread(udp_exchange, server.port, requests, 3)
    assert [reply[:2] for reply in replies] == [b"\x02\xfd", b"\x03\xfc", b"\x02\xfd"]
    assert all(HEADER.unpack_from(reply)[2] == 0x0004 for reply in replies)
    assert all(reply[8:25] == VIN.encode() for reply in replies)


async def test_vehicle_identification_ignores_other_vehicles_and_garbage(
    server: DoipServer,
) -> None:
    datagrams = [
        b"\x02\xfd\x00",  # shorter than a header: ignored
        frame(0x0003, b"WOTHERCAR00000001"),  # another VIN: no answer
        frame(0x0002, b"\x00\x11\x22\x33\x44\x55"),  # another EID: no answer
        frame(0x0004, bytes(33)),  # someone else's announcement: never answered
        b"\x02\x02\x00\x01\x00\x00\x00\x00",  # bad inverse: NACK 0x00
        frame(0x9999),  # unknown payload type: NACK 0x01
        frame(0x0005, bytes(7)),  # routing activation is TCP only: NACK 0x01
        frame(0x0001)[:4] + struct.pack("!L", 5),  # length says 5, none follow: NACK 0x04
        frame(0x0001, version=0xFF)[:2] + b"\x40\x01" + bytes(4),  # 0xFF only for identification
        frame(0x0003, VIN.encode()),  # this vehicle: answered
    ]
    replies = await asyncio.to_thread(udp_exchange, server.port, datagrams, 6)
    kinds = [(HEADER.unpack_from(reply)[2], reply[8:9]) for reply in replies]
    assert kinds == [
        (0x0000, b"\x00"),
        (0x0000, b"\x01"),
        (0x0000, b"\x01"),
        (0x0000, b"\x04"),
        (0x0000, b"\x00"),
        (0x0004, b"W"),
    ]


async def test_entity_status_and_power_mode_on_tcp(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        await tester.send(frame(0x4001, version=0x03))
        version, payload_type, payload = await tester.receive()
        assert (version, payload_type) == (0x03, 0x4002)
        node_type, max_sockets, open_sockets, max_data = struct.unpack("!BBBL", payload)
        assert (node_type, max_sockets, open_sockets, max_data) == (
            0x01,
            16,
            1,
            4096,
        )  # 8 registered + 8 waiting
        await tester.send(frame(0x4003))
        assert await tester.expect(0x4004) == b"\x01"
        await tester.send(frame(0x0007))
        assert await tester.expect(0x0008) == struct.pack("!H", ECU)


async def test_functional_requests_are_answered_by_the_ecu(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x3e\x00", target=0xE400))
        _, payload_type, ack = await tester.receive()
        assert (payload_type, ack[:5]) == (0x8002, struct.pack("!HHB", 0xE400, TESTER, 0))
        answer = await tester.expect(0x8001)
        assert answer == struct.pack("!HH", ECU, TESTER) + b"\x7e\x00"


async def test_functional_requests_get_no_refusal_of_what_the_ecu_does_not_serve(
    server: DoipServer,
) -> None:
    # ISO 14229-1: to a functional request, "service not supported" (and 0x12, 0x31, 0x7E,
    # 0x7F) is not sent: another ECU may serve it. Physically addressed, the refusal is sent.
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x31\x01\xff\x00", target=0xE400))
        await tester.expect(0x8002)
        await tester.send(diagnostic(b"\x22\xf1\x90", target=0xE400))
        await tester.expect(0x8002)
        answer = await tester.expect(0x8001)
        assert answer[4:] == b"\x62\xf1\x90" + VIN.encode()  # the first answer is the second's
        await tester.send(diagnostic(b"\x31\x01\xff\x00"))
        await tester.expect(0x8002)
        assert (await tester.expect(0x8001))[4:] == b"\x7f\x31\x11"


async def test_suppressed_response_is_acknowledged_and_not_answered(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x3e\x80"))
        await tester.expect(0x8002)
        await tester.send(diagnostic(b"\x22\xf1\x90"))
        await tester.expect(0x8002)
        answer = await tester.expect(0x8001)
        assert answer[4:] == b"\x62\xf1\x90" + VIN.encode()  # the first answer is the second's


# --- routing activation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "activation_type", "code"),
    [
        (0x0001, 0x00, 0x00),  # not a tester's address
        (0x1000, 0x00, 0x00),
        (0x0FFF, 0x02, 0x06),  # a type the standard does not define
        (0x0E80, 0xE1, 0x06),  # central security: not supported here
    ],
)
async def test_routing_activation_denied_and_socket_closed(
    server: DoipServer, source: int, activation_type: int, code: int
) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate(source, activation_type) == code
        assert await tester.closed_by_server()


async def test_routing_activation_types_default_and_wwh_obd(server: DoipServer) -> None:
    async with raw(server.port) as first, raw(server.port) as second:
        assert await first.activate(0x0E00, 0x00) == 0x10
        assert await second.activate(0x0FFF, 0x01) == 0x10
        assert await first.activate(0x0E00, 0x00) == 0x10  # again on the same socket: fine
        await second.send(frame(0x0005, struct.pack("!HBLL", 0x0FFF, 0x01, 0, 0xDEADBEEF)))
        assert (await second.expect(0x0006))[4] == 0x10  # the OEM-specific field is allowed
        assert await first.activate(0x0E01) == 0x02  # another address on an active socket
        assert await first.closed_by_server()


async def test_same_address_on_another_socket_while_the_first_answers(
    server: DoipServer,
) -> None:
    async with raw(server.port) as first, raw(server.port) as second:
        assert await first.activate() == 0x10

        async def answer_alive_check() -> None:
            await first.expect(0x0007)
            await first.send(frame(0x0008, struct.pack("!H", TESTER)))

        answering = asyncio.create_task(answer_alive_check())
        assert await second.activate() == 0x03  # the holder is alive: refused
        await answering
        assert await second.closed_by_server()
        await first.send(diagnostic(b"\x3e\x00"))
        assert (await first.expect(0x8001))[4:] == b"\x7e\x00"


async def test_same_address_taken_over_from_a_silent_socket(server: DoipServer) -> None:
    async with raw(server.port) as first, raw(server.port) as second:
        assert await first.activate() == 0x10
        assert await second.activate() == 0x10  # the first never answered its alive check
        assert await first.closed_by_server()
        assert server.tally.counts["doip_silent_holder_closed"] == 1
        await second.send(diagnostic(b"\x3e\x00"))
        assert (await second.expect(0x8001))[4:] == b"\x7e\x00"


# --- negative acknowledgements --------------------------------------------------------------------


async def generic_nack(tester: Raw) -> int:
    _, payload_type, payload = await tester.receive()
    assert payload_type == 0x0000
    return payload[0]


async def diagnostic_nack(tester: Raw) -> tuple[int, int, int]:
    payload = await tester.expect(0x8003)
    source, target, code = struct.unpack_from("!HHB", payload)
    return source, target, code


async def test_incorrect_pattern_is_nacked_and_closed(server: DoipServer) -> None:
    for header in (b"\x02\x02\x00\x05\x00\x00\x00\x07", b"\x01\xfe\x00\x05\x00\x00\x00\x07"):
        async with raw(server.port) as tester:
            await tester.send(header)
            assert await generic_nack(tester) == 0x00
            assert await tester.closed_by_server()
    async with raw(server.port) as tester:  # 0xFF belongs to vehicle identification only
        await tester.send(frame(0x0005, bytes(7), version=0xFF))
        assert await generic_nack(tester) == 0x00
        assert await tester.closed_by_server()


async def test_unknown_payload_type_is_nacked_and_skipped(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        await tester.send(frame(0x1234, b"abc") + frame(0x0001))  # UDP's type, on TCP
        assert await generic_nack(tester) == 0x01
        assert await generic_nack(tester) == 0x01
        assert await tester.activate() == 0x10  # the socket still works


async def test_message_too_large_is_nacked_and_skipped(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        await tester.send(frame(0x8001, bytes(server.max_payload + 1)))
        assert await generic_nack(tester) == 0x02
        assert await tester.activate() == 0x10  # the oversized payload was skipped exactly
    async with raw(server.port) as tester:
        await tester.send(HEADER.pack(2, 0xFD, 0x8001, 0xFFFFFFFF))
        assert await generic_nack(tester) == 0x02
    assert server.tally.counts["doip_message_too_large"] == 2


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [(0x0005, b"\x0e\x00\x00"), (0x0005, bytes(9)), (0x8001, b"\x0e\x00\x07\x40"), (0x4001, b"x")],
)
async def test_invalid_payload_length_is_nacked_and_closed(
    server: DoipServer, payload_type: int, payload: bytes
) -> None:
    async with raw(server.port) as tester:
        await tester.send(frame(payload_type, payload))
        assert await generic_nack(tester) == 0x04
        assert await tester.closed_by_server()


async def test_diagnostic_before_routing_activation(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        await tester.send(diagnostic(b"\x22\xf1\x90"))
        assert await diagnostic_nack(tester) == (ECU, TESTER, 0x02)
        assert await tester.closed_by_server()


async def test_diagnostic_from_another_source_address(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x22\xf1\x90", source=0x0E01))
        assert await diagnostic_nack(tester) == (ECU, 0x0E01, 0x02)
        assert await tester.closed_by_server()


async def test_diagnostic_to_an_unknown_target_address(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x22\xf1\x90", target=0x0741))
        assert await diagnostic_nack(tester) == (0x0741, TESTER, 0x03)
        await tester.send(diagnostic(b"\x3e\x00"))  # the socket still works
        assert (await tester.expect(0x8001))[4:] == b"\x7e\x00"


async def test_diagnostic_larger_than_the_ecu_takes(server: DoipServer) -> None:
    async with raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x2e\xf1\x90" + bytes(server.max_request_size)))
        assert await diagnostic_nack(tester) == (ECU, TESTER, 0x04)
        await tester.send(diagnostic(b"\x3e\x00"))
        assert (await tester.expect(0x8001))[4:] == b"\x7e\x00"


# --- bounds ---------------------------------------------------------------------------------------


async def test_sockets_waiting_for_routing_activation_are_bounded(server: DoipServer) -> None:
    """Eight may wait for their routing activation besides the eight registered ones: a ninth
    waiting one is closed at once, and so is the seventeenth in all."""
    async with contextlib.AsyncExitStack() as stack:
        testers = [await stack.enter_async_context(raw(server.port)) for _ in range(8)]
        await until(lambda: server.open_connections == 8)
        async with raw(server.port) as ninth:
            assert await ninth.closed_by_server()
        assert server.tally.counts["doip_socket_refused"] == 1
        for index, tester in enumerate(testers):
            assert await tester.activate(TESTER + index) == 0x10
        assert server.registered_connections == 8
        waiting = [await stack.enter_async_context(raw(server.port)) for _ in range(8)]
        await until(lambda: server.open_connections == 16)
        async with raw(server.port) as seventeenth:
            assert await seventeenth.closed_by_server()
        assert server.tally.counts["doip_socket_refused"] == 2
        await waiting[0].close()
        await until(lambda: server.open_connections == 15)
        async with raw(server.port) as another:  # a place is free again
            await another.send(frame(0x4001))
            assert (await another.expect(0x4002))[2] == 16  # open sockets
        assert server.registered_connections == 8


async def test_a_connection_flood_stays_bounded() -> None:
    async with serving(initial_inactivity=0.5) as server:
        async with contextlib.AsyncExitStack() as stack:
            flood = [await stack.enter_async_context(raw(server.port)) for _ in range(40)]
            await until(lambda: server.tally.counts["doip_socket_refused"] == 32)
            assert server.open_connections == server.max_sockets == 8
            for tester in flood:
                assert await tester.closed_by_server()  # refused at once, or after 0.5 s
            assert server.open_connections == 0
        async with raw(server.port) as tester:  # the flood is over: served again
            assert await tester.activate() == 0x10


class Answering:
    """A tester that reads all the time: it answers alive checks and keeps the rest."""

    def __init__(self, tester: Raw, source: int) -> None:
        self.tester, self.source = tester, source
        self.alive_checks = 0
        self.received: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        reader = self.tester.reader
        while True:
            version, _, payload_type, length = HEADER.unpack(await reader.readexactly(HEADER.size))
            payload = await reader.readexactly(length)
            if payload_type == 0x0007:
                self.alive_checks += 1
                await self.tester.send(frame(0x0008, struct.pack("!H", self.source), version))
            else:
                self.received.put_nowait((payload_type, payload))

    async def receive(self, payload_type: int) -> bytes:
        async with asyncio.timeout(5):
            while True:
                got_type, payload = await self.received.get()
                if got_type == payload_type:
                    return payload

    async def activate(self) -> int:
        await self.tester.send(activation(self.source))
        return (await self.receive(0x0006))[4]

    async def tester_present(self) -> bytes:
        await self.tester.send(diagnostic(b"\x3e\x00", source=self.source))
        return (await self.receive(0x8001))[4:]

    async def stop(self) -> None:
        self.reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.IncompleteReadError, OSError):
            await self.reading


async def answering_testers(
    stack: contextlib.AsyncExitStack, port: int, sources: range
) -> list[Answering]:
    testers = []
    for source in sources:
        answering = Answering(await stack.enter_async_context(raw(port)), source)
        stack.push_async_callback(answering.stop)
        testers.append(answering)
    return testers


async def test_silent_registered_testers_do_not_lock_a_ninth_out(server: DoipServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        silent = [await stack.enter_async_context(raw(server.port)) for _ in range(8)]
        for index, tester in enumerate(silent):
            assert await tester.activate(TESTER + index) == 0x10
        # From here on they never read again, and never answer an alive check.
        async with raw(server.port) as ninth:
            assert await ninth.activate(0x0F00) == 0x10
            for tester in silent:
                assert await tester.closed_by_server()
            assert server.tally.counts["doip_silent_socket_closed"] == 8
            assert server.registered_connections == 1
            await ninth.send(diagnostic(b"\x3e\x00", source=0x0F00))
            assert (await ninth.expect(0x8001))[4:] == b"\x7e\x00"


async def test_a_ninth_tester_is_denied_while_eight_answer(server: DoipServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        testers = await answering_testers(stack, server.port, range(TESTER, TESTER + 8))
        for tester in testers:
            assert await tester.activate() == 0x10
        async with raw(server.port) as ninth:
            assert await ninth.activate(0x0F00) == 0x01  # all sockets registered and active
            assert await ninth.closed_by_server()
        assert [tester.alive_checks for tester in testers] == [1] * 8
        assert server.registered_connections == 8
        assert "doip_silent_socket_closed" not in server.tally.counts
        for tester in testers:
            assert await tester.tester_present() == b"\x7e\x00"


async def test_concurrent_activations_never_register_more_than_max_sockets(
    server: DoipServer,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for tester in await answering_testers(stack, server.port, range(TESTER, TESTER + 7)):
            assert await tester.activate() == 0x10
        newcomers = await answering_testers(stack, server.port, range(0x0F00, 0x0F04))
        codes = await asyncio.gather(*(tester.activate() for tester in newcomers))
        assert sorted(codes) == [0x01, 0x01, 0x01, 0x10]  # one place, taken once
        assert server.registered_connections == 8
        assert "doip_silent_socket_closed" not in server.tally.counts


async def test_concurrent_activations_share_one_alive_check_of_silent_sockets(
    server: DoipServer,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        silent = [await stack.enter_async_context(raw(server.port)) for _ in range(8)]
        for index, tester in enumerate(silent):
            assert await tester.activate(TESTER + index) == 0x10
        newcomers = await answering_testers(stack, server.port, range(0x0F00, 0x0F04))
        codes = await asyncio.gather(*(tester.activate() for tester in newcomers))
        assert codes == [0x10] * 4  # side by side, not one alive-check timeout after another
        assert server.tally.counts["doip_silent_socket_closed"] == 8
        assert server.registered_connections == 4
        for tester in silent:
            assert await tester.closed_by_server()


async def test_a_tester_waiting_for_a_slow_answer_is_not_taken_for_silent() -> None:
    gate = Gate()
    async with (
        serving(gate.handle, alive_check_timeout=0.3) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        silent = [await stack.enter_async_context(raw(server.port)) for _ in range(8)]
        for index, tester in enumerate(silent):
            assert await tester.activate(TESTER + index) == 0x10
        await silent[0].send(diagnostic(b"\x14\xff\xff\xff"))
        assert (await silent[0].expect(0x8001))[4:] == b"\x7f\x14\x78"  # pending
        async with raw(server.port) as ninth:
            assert await ninth.activate(0x0F00) == 0x10
            for tester in silent[1:]:
                assert await tester.closed_by_server()
            assert server.tally.counts["doip_silent_socket_closed"] == 7
            gate.open.set()
            while (answer := (await silent[0].expect(0x8001))[4:]) == b"\x7f\x14\x78":
                pass
            assert answer == b"\x54"
            assert server.registered_connections == 2


async def test_initial_inactivity_closes_a_socket_that_never_activates() -> None:
    async with serving(initial_inactivity=0.2) as server, raw(server.port) as tester:
        await tester.send(frame(0x0007))  # talking is not activating: the clock keeps running
        await tester.expect(0x0008)
        assert await tester.closed_by_server()
        assert server.tally.counts["doip_inactivity_close"] == 1


async def test_general_inactivity_closes_an_idle_active_socket() -> None:
    async with serving(general_inactivity=0.2) as server, raw(server.port) as tester:
        assert await tester.activate() == 0x10
        assert await tester.closed_by_server()
        assert server.tally.counts["doip_inactivity_close"] == 1


async def test_truncated_frames_cost_only_their_socket(server: DoipServer) -> None:
    for cut in (diagnostic(b"\x22\xf1\x90")[:10], frame(0x0005, bytes(7))[:5]):
        async with raw(server.port) as tester:
            if cut[2:4] == b"\x80\x01":
                assert await tester.activate() == 0x10
            await tester.send(cut)
        await until(lambda: server.open_connections == 0)
    result = await asyncio.to_thread(uds_session, server.port, 2)
    assert result["vin"] == VIN


async def test_a_client_that_never_reads_is_dropped_and_others_are_served() -> None:
    async with serving(send_timeout=0.5) as server:
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(10)
        try:
            await asyncio.to_thread(stalled.connect, ("127.0.0.1", server.port))
            await asyncio.to_thread(stalled.sendall, activation())

            def flood() -> None:
                # 4 kB answers to 12-byte requests: the server's buffers fill long before ours.
                with contextlib.suppress(OSError):
                    for _ in range(100_000):
                        stalled.sendall(diagnostic(b"\x23\x11\x00\x00"))

            flooding = asyncio.create_task(asyncio.to_thread(flood))
            await until(lambda: server.tally.counts["doip_client_not_reading"] > 0)
            result = await asyncio.to_thread(uds_session, server.port, 2)
            assert result["vin"] == VIN
            await until(lambda: server.open_connections == 0)
            await flooding
        finally:
            stalled.close()


async def test_close_ends_every_connection_and_the_listeners() -> None:
    server = DoipServer(tiny_uds, view, host="127.0.0.1", port=0, logical_address=ECU)
    where = await server.start()
    assert where == f"127.0.0.1:{server.port}"
    async with raw(server.port) as first, raw(server.port) as second:
        assert await first.activate() == 0x10
        await server.close()
        assert await first.closed_by_server()
        assert await second.closed_by_server()
    with pytest.raises(ConnectionRefusedError):
        await Raw.connect(server.port)
    await server.close()  # idempotent


async def test_start_fails_cleanly_when_the_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = DoipServer(tiny_uds, view, host="127.0.0.1", port=port)
        with pytest.raises(OSError, match="in use"):
            await server.start()
        with pytest.raises(ConnectionRefusedError):  # the TCP listener it had bound is closed
            await Raw.connect(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = DoipServer(tiny_uds, view, host="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            await server.start()


# --- fuzz -----------------------------------------------------------------------------------------

headers = st.builds(
    HEADER.pack,
    st.sampled_from([0x02, 0x03, 0xFF, 0x01, 0x00]),
    st.sampled_from([0xFD, 0xFC, 0x00, 0xFE]),
    st.sampled_from([0x0005, 0x8001, 0x0007, 0x0008, 0x4001, 0x4003, 0x0001, 0x0000, 0xFFFF]),
    st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1)),
)
messages = st.tuples(headers, st.binary(max_size=40)).map(lambda parts: parts[0] + parts[1])
streams = st.lists(st.one_of(messages, st.binary(max_size=40)), min_size=1, max_size=4).map(
    lambda parts: (activation() if parts[0][:1] == b"\x02" else b"") + b"".join(parts)
)


async def test_fuzzed_frames_never_stop_the_server() -> None:
    async with serving(initial_inactivity=0.5, general_inactivity=0.5, send_timeout=1.0) as server:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(stream=streams)
        def fuzz(stream: bytes) -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
                received = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        received += chunk
            assert well_formed_replies(received), received.hex()

        await asyncio.to_thread(fuzz)
        await until(lambda: server.open_connections == 0)
        result = await asyncio.to_thread(uds_session, server.port, 3)
        assert result["vin"] == VIN


async def test_udp_garbage_never_stops_discovery() -> None:
    async with serving(udp_replies_per_second=100_000) as server:

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(datagram=st.one_of(st.binary(max_size=64), messages))
        def fuzz(datagram: bytes) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(datagram, ("127.0.0.1", server.port))

        await asyncio.to_thread(fuzz)
        # Asked as a tester does over UDP, again if unanswered: behind the flood the kernel may
        # drop a datagram when the node's receive buffer is full.
        for attempt in range(5):
            try:
                [reply] = await asyncio.to_thread(udp_exchange, server.port, [frame(0x0001)], 1)
                break
            except TimeoutError:
                assert attempt < 4, "discovery never answered after the garbage"
        assert reply[8:25] == VIN.encode()


async def test_udp_replies_are_rationed() -> None:
    async with serving(udp_replies_per_second=10) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                sock.sendto(frame(0x9999), ("127.0.0.1", server.port))
        await until(lambda: server.tally.counts["doip_udp_over_budget"] >= 30)
        assert server.tally.counts["doip_udp_unknown_payload_type"] == 50


# --- slow answers ---------------------------------------------------------------------------------


class Gate:
    """A handler whose answers to a clear (0x14) wait until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.finished = 0

    async def handle(self, request: bytes) -> bytes | None:
        if request[:1] == b"\x14":
            await self.open.wait()
            self.finished += 1
            return b"\x54"
        return await tiny_uds(request)


async def test_response_pending_while_the_answer_is_slow() -> None:
    gate = Gate()
    async with serving(gate.handle) as server, raw(server.port) as tester:
        assert await tester.activate() == 0x10
        await tester.send(diagnostic(b"\x14\xff\xff\xff"))
        await tester.expect(0x8002)
        assert (await tester.expect(0x8001))[4:] == b"\x7f\x14\x78"
        gate.open.set()
        while (answer := (await tester.expect(0x8001))[4:]) == b"\x7f\x14\x78":
            pass
        assert answer == b"\x54"


async def test_a_request_runs_to_its_end_when_the_tester_goes() -> None:
    gate = Gate()
    async with serving(gate.handle) as server:
        async with raw(server.port) as tester:
            assert await tester.activate() == 0x10
            await tester.send(diagnostic(b"\x14\xff\xff\xff"))
            assert (await tester.expect(0x8001))[4:] == b"\x7f\x14\x78"
        await until(lambda: server.open_connections == 0)
        gate.open.set()
        await until(lambda: gate.finished == 1)


# --- the real UDS server behind the transport -----------------------------------------------------


def workshop_round(port: int) -> dict[str, Any]:
    """Read the VIN and the confirmed DTCs, clear, read the DTCs again."""
    config = udsoncan.configs.default_client_config.copy()
    config["data_identifiers"] = {0xF190: udsoncan.AsciiCodec(17)}

    def confirmed(client: Client) -> list[tuple[int, int]]:
        response = client.get_dtc_by_status_mask(int(DTCStatus.CONFIRMED_DTC))
        assert response is not None
        return [(dtc.id, dtc.status.get_byte_as_int()) for dtc in response.service_data.dtcs]

    with DoIPClient("127.0.0.1", ECU, tcp_port=port, udp_port=port) as doip:  # type: ignore[no-untyped-call]
        connection = DoIPClientUDSConnector(doip)  # type: ignore[no-untyped-call]
        with Client(connection, config=config, request_timeout=5) as client:
            vin = client.read_data_by_identifier(0xF190).service_data.values[0xF190]
            before = confirmed(client)
            cleared = client.clear_dtc(0xFFFFFF).positive
            after = confirmed(client)
    return {"vin": vin, "before": before, "cleared": cleared, "after": after}


async def test_the_uds_server_over_doip() -> None:
    car = BrakeLampMemory(VIN)
    ecu = UdsServer(car.link())
    async with serving(ecu.handle, car.view) as server:
        result = await asyncio.to_thread(workshop_round, server.port)
    assert result == {
        "vin": VIN,
        "before": [(BRAKE_OPEN.uds_code, CONFIRMED)],
        "cleared": True,
        "after": [],
    }
    assert car.clears == 1


async def test_close_with_connections_in_the_middle_of_a_message_is_quiet() -> None:
    """asyncio 3.11 reports a cancelled connection handler to the loop's exception handler
    ("Exception in callback StreamReaderProtocol.connection_made.<locals>.callback"); close()
    lets the handlers end by themselves instead."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        server = DoipServer(tiny_uds, view, host="127.0.0.1", port=0, logical_address=ECU)
        await server.start()
        async with raw(server.port) as busy, raw(server.port) as idle:
            assert await busy.activate() == 0x10
            # An unknown payload type that announces 4 GiB: the server is skipping it.
            await busy.send(bytes.fromhex("02FD1234FFFFFFFF") + bytes(1000))
            assert await generic_nack(busy) == 0x01
            await until(lambda: server.open_connections == 2)
            await server.close()
            assert await busy.closed_by_server()
            assert await idle.closed_by_server()
        await asyncio.sleep(0)  # one more turn: done callbacks of the handlers have run
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
    assert server.open_connections == 0
