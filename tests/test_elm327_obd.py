"""The ELM327 interface end to end: python-OBD, a real OBD-II client library, connects over TCP
(as to a Wi-Fi dongle) and over the pseudo-terminal (as to a serial adapter) and reads a simulated
car with a dead alternator and a blown brake lamp; and the servers under clients that misbehave.

python-OBD is blocking: it runs in a thread (`asyncio.to_thread`), the servers in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import termios
from collections.abc import Callable

import obd  # type: ignore[import-untyped]  # python-OBD ships no type information
import pytest
from obd import OBDStatus

from carlightd.core.domain import Ignition, Kind
from carlightd.core.dtc import DTCStatus
from carlightd.outputs.scan_tool.elm327 import emission_codes
from carlightd.outputs.scan_tool.elm327_server import Elm327PtyServer, Elm327TcpServer
from carlightd.outputs.scan_tool.view import (
    ScanToolLink,
    VehicleView,
    supported_entries,
    view_of,
)
from tests.simulate import Bench

# python-OBD 0.7.3 strips "0", "1", "2", "x" and "\\" from both ends of a VIN (its strip set
# spells b"\\x00" as four characters): a VIN that neither starts nor ends with one reads back whole.
VIN = "WP0ZZZ99ZTS392124"
OBD_TIMEOUT_S = 0.5
# Cycles until both injected failures are confirmed (3 by default; margin for the debounce).
CYCLES_TO_CONFIRM = 40


class Daemon:
    """The daemon's side of the link, from the pure core over the simulated car: each view is a
    real cycle's report; clear is the fault memory's own clear, counted."""

    def __init__(self) -> None:
        self.bench = Bench(seed=1, ignition=Ignition.RUN, profile="steady", noise=0.0)
        self.bench.car.inject("alternator", "no_output")  # P0620, emission-related
        self.bench.car.inject("brake_left", "open_circuit")  # B1200, not emission-related
        self.supported = supported_entries(set(Kind))
        self.view = view_of(self.bench.run(CYCLES_TO_CONFIRM), VIN, self.supported)
        self.clears = 0

    async def clear(self) -> int:
        self.clears += 1
        events = self.bench.memory.clear(self.bench.now)
        self.view = view_of(self.bench.cycle(), VIN, self.supported)
        return len(events)

    def link(self) -> ScanToolLink:
        return ScanToolLink(view=lambda: self.view, clear=self.clear)


@pytest.fixture
def daemon() -> Daemon:
    daemon = Daemon()
    codes = [d.dtc for d in daemon.view.dtcs if d.dtc_status & DTCStatus.CONFIRMED_DTC]
    assert codes == ["P0620", "B1200"]  # the car this file reads, as the fault memory holds it
    return daemon


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll the server's own state (it has no event to wait on) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def port_of(endpoint: str) -> int:
    host, _, port = endpoint.rpartition(":")
    assert host == "127.0.0.1"
    return int(port)


async def connect_obd(portstr: str) -> obd.OBD:
    return await asyncio.to_thread(obd.OBD, portstr, fast=False, timeout=OBD_TIMEOUT_S)


async def query(
    connection: obd.OBD, command: obd.OBDCommand, force: bool = False
) -> obd.OBDResponse:
    return await asyncio.to_thread(connection.query, command, force)


async def check_reads_the_car(connection: obd.OBD, daemon: Daemon) -> None:
    view: VehicleView = daemon.view
    assert view.telemetry is not None
    assert view.telemetry.engine_rpm is not None
    assert view.telemetry.bus_v is not None
    assert connection.status() == OBDStatus.CAR_CONNECTED == "Car Connected"
    assert connection.protocol_id() == "6"
    assert connection.protocol_name() == "ISO 15765-4 (CAN 11/500)"
    for command in ("RPM", "CONTROL_MODULE_VOLTAGE", "STATUS", "VIN"):
        assert connection.supports(obd.commands[command]), command  # found through 0100/0120/..

    rpm = await query(connection, obd.commands.RPM)
    assert rpm.value.to("rpm").magnitude == round(view.telemetry.engine_rpm * 4) / 4
    voltage = await query(connection, obd.commands.CONTROL_MODULE_VOLTAGE)
    assert voltage.value.to("volt").magnitude == round(view.telemetry.bus_v * 1000) / 1000
    elm_voltage = await query(connection, obd.commands.ELM_VOLTAGE)
    assert elm_voltage.value.to("volt").magnitude == round(view.telemetry.bus_v, 1)

    status = (await query(connection, obd.commands.STATUS)).value
    assert status.MIL is True
    assert status.DTC_count == 1  # P0620; B1200 is not emission-related

    stored = (await query(connection, obd.commands.GET_DTC)).value
    assert [code for code, _ in stored] == ["P0620"]
    pending = (await query(connection, obd.commands.GET_CURRENT_DTC)).value
    expected = emission_codes(view, DTCStatus.PENDING_DTC)
    assert [code for code, _ in pending] == [f"P{code:04X}" for code in expected]

    vin = (await query(connection, obd.commands.VIN)).value
    assert bytes(vin) == VIN.encode()


async def test_python_obd_reads_the_car_over_tcp(daemon: Daemon) -> None:
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0)
    endpoint = await server.start()
    try:
        connection = await connect_obd(f"socket://127.0.0.1:{port_of(endpoint)}")
        try:
            await check_reads_the_car(connection, daemon)
            # python-OBD's FREEZE_DTC is service 01 PID 02, not among the PIDs this ECU offers
            # (DESIGN §7: 00, 01, 0C, 42): not in 0100's bitmap, and a forced query has no data.
            assert not connection.supports(obd.commands.FREEZE_DTC)
            assert (await query(connection, obd.commands.FREEZE_DTC, force=True)).is_null()

            assert daemon.clears == 0
            await query(connection, obd.commands.CLEAR_DTC)
            assert daemon.clears == 1
            status = (await query(connection, obd.commands.STATUS)).value
            assert status.DTC_count == 0  # cleared; the dead alternator is only pending again
            assert status.MIL is False
        finally:
            await asyncio.to_thread(connection.close)
    finally:
        await server.close()


async def test_python_obd_fast_mode_counts_answers_and_repeats_with_a_lone_cr(
    daemon: Daemon,
) -> None:
    """fast=True: python-OBD appends the expected frame count ("010C1") and sends a bare CR to
    repeat the command it sent last."""
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0)
    endpoint = await server.start()
    try:
        portstr = f"socket://127.0.0.1:{port_of(endpoint)}"
        connection = await asyncio.to_thread(obd.OBD, portstr, fast=True, timeout=OBD_TIMEOUT_S)
        try:
            assert connection.status() == OBDStatus.CAR_CONNECTED
            for _ in range(3):  # 010C, then 010C1, then a lone CR
                rpm = await query(connection, obd.commands.RPM)
                assert rpm.value.to("rpm").magnitude == 800
            vin = (await query(connection, obd.commands.VIN)).value
            assert bytes(vin) == VIN.encode()
        finally:
            await asyncio.to_thread(connection.close)
    finally:
        await server.close()


async def test_python_obd_reads_the_car_over_the_pty_again_and_again(daemon: Daemon) -> None:
    server = Elm327PtyServer(daemon.link())
    path = await server.start()
    try:
        assert path.startswith("/dev/pts/")
        for _ in range(2):  # an app connects, closes, and connects again
            connection = await connect_obd(path)
            try:
                await check_reads_the_car(connection, daemon)
            finally:
                await asyncio.to_thread(connection.close)
        # Other peers open and close the slave, some leaving unread answers behind.
        for round_ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            if round_ % 2:
                await write_all(fd, b"0902\r" * 50 + b"\xff\x00garbage\r")
            os.close(fd)
        connection = await connect_obd(path)
        try:
            assert connection.status() == OBDStatus.CAR_CONNECTED
            rpm = await query(connection, obd.commands.RPM)
            assert rpm.value.to("rpm").magnitude == 800
        finally:
            await asyncio.to_thread(connection.close)
    finally:
        await server.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_pty_server_closes_its_fds_and_close_is_idempotent(daemon: Daemon) -> None:
    before = open_fds()
    server = Elm327PtyServer(daemon.link())
    path = await server.start()
    assert open_fds() == before + 2
    await server.close()
    await server.close()
    assert open_fds() == before
    with pytest.raises(OSError):  # noqa: PT011 -- the pty is gone with its master
        os.close(os.open(path, os.O_RDWR | os.O_NOCTTY))


async def test_answers_a_pty_client_never_reads_are_lost_not_kept(daemon: Daemon) -> None:
    server = Elm327PtyServer(daemon.link())
    path = await server.start()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        # Requests whose answers (about 100 bytes each) overflow the terminal's buffer, unread.
        await write_all(fd, b"0902\r" * 5_000)
        await until(lambda: server.lines == 5_000)
        assert server.lost_output > 50_000
        # The client flushes what it left unread and asks again: it is answered, and only that.
        termios.tcflush(fd, termios.TCIFLUSH)
        os.write(fd, b"ATZ\r")
        received = bytearray()

        def reset_answered() -> bool:
            with contextlib.suppress(BlockingIOError):
                received.extend(os.read(fd, 4096))
            return received.endswith(b">")

        await until(reset_answered)
        assert bytes(received) == b"ATZ\r\rELM327 v1.5\r\r>"
    finally:
        os.close(fd)
        await server.close()


async def write_all(fd: int, data: bytes) -> None:
    """Write to a non-blocking terminal, waiting while the server has not read what is there."""
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            await asyncio.sleep(0.01)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    writer.write(line + b"\r")
    await writer.drain()
    async with asyncio.timeout(10):
        return await reader.readuntil(b">")


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the server reset this connection without a word."""
    try:
        async with asyncio.timeout(10):
            await reader.read()
    except ConnectionResetError:
        return True
    return False


async def test_tcp_serves_four_clients_and_refuses_a_fifth_while_they_spoke_lately(
    daemon: Daemon,
) -> None:
    # No eviction within this test: the four spoke less than a minute ago.
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0, evict_after_s=60.0)
    port = port_of(await server.start())
    try:
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for reader, writer in clients:
            assert await ask(reader, writer, b"ATI") == b"ATI\rELM327 v1.5\r\r>"
        assert server.client_count == 4
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await refused(reader)
        writer.close()
        assert (server.refused, server.evicted) == (1, 0)
        # One leaves; a newcomer gets its place, with a session of its own (echo on).
        clients[0][1].close()
        await until(lambda: server.client_count == 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await ask(reader, writer, b"ATI") == b"ATI\rELM327 v1.5\r\r>"
        reader1, writer1 = clients[1]
        assert await ask(reader1, writer1, b"ATE0") == b"ATE0\rOK\r\r>"
        assert await ask(reader, writer, b"010C") == b"010C\r41 0C 0C 80\r\r>"  # 800 rpm
        assert await ask(reader1, writer1, b"010C") == b"41 0C 0C 80\r\r>"
    finally:
        await server.close()
    # close() closed every connection.
    async with asyncio.timeout(10):
        assert await reader.read() == b""
        assert await clients[2][0].read() == b""
    for _, client in [*clients, (reader, writer)]:
        client.close()


async def test_tcp_four_silent_clients_make_room_for_python_obd(daemon: Daemon) -> None:
    # Any silence is long enough here: the threshold itself is the next test's business.
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0, evict_after_s=0.0)
    port = port_of(await server.start())
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    try:
        await until(lambda: server.client_count == 4)
        connection = await connect_obd(f"socket://127.0.0.1:{port}")
        try:
            assert connection.status() == OBDStatus.CAR_CONNECTED
            rpm = await query(connection, obd.commands.RPM)
            assert rpm.value.to("rpm").magnitude == 800
        finally:
            await asyncio.to_thread(connection.close)
        # python-OBD took the slot of the first silent client (silent since it came first).
        assert (server.evicted, server.refused) == (1, 0)
        async with asyncio.timeout(10):
            assert await silent[0][0].read() == b""
        for reader, writer in silent[1:]:
            assert await ask(reader, writer, b"ATI") == b"ATI\rELM327 v1.5\r\r>"
    finally:
        for _, writer in silent:
            writer.close()
        await server.close()


class Poller:
    """An app polling engine speed every 100 ms on its own connection, counting the answers."""

    PERIOD_S = 0.1

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answered = 0
        self.quiet = asyncio.Event()
        self.task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        assert await ask(self.reader, self.writer, b"ATE0") == b"ATE0\rOK\r\r>"
        while not self.quiet.is_set():
            assert await ask(self.reader, self.writer, b"010C") == b"41 0C 0C 80\r\r>"
            self.answered += 1
            await asyncio.sleep(self.PERIOD_S)


async def keep_being_served(pollers: list[Poller], answers: int = 5) -> None:
    """Until each poller has been answered `answers` more times; a poller's failure is raised."""
    served = [poller.answered for poller in pollers]

    def each_answered() -> bool:
        for poller in pollers:
            if poller.task.done():
                poller.task.result()  # raises what failed it
                raise AssertionError("a poller stopped while it should be polling")
        return all(p.answered >= n + answers for p, n in zip(pollers, served, strict=True))

    await until(each_answered)


async def test_tcp_four_polling_clients_keep_their_slots_until_one_falls_silent(
    daemon: Daemon,
) -> None:
    evict_after_s = 1.0  # ten polling periods
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0, evict_after_s=evict_after_s)
    port = port_of(await server.start())
    pollers = [Poller(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(4)]
    try:
        # Connected longer ago than evict_after_s, but heard from every 100 ms.
        rounds = round(2 * evict_after_s / Poller.PERIOD_S)
        await until(lambda: all(poller.answered >= rounds for poller in pollers))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await refused(reader)
        writer.close()
        assert (server.refused, server.evicted, server.client_count) == (1, 0, 4)
        await keep_being_served(pollers)

        # The first app stops polling: once it has been silent evict_after_s, a newcomer (trying
        # every 100 ms, refused until then) gets its slot.
        pollers[0].quiet.set()
        await pollers[0].task
        async with asyncio.timeout(15):
            while True:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    answer = await ask(reader, writer, b"ATI")
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    await asyncio.sleep(Poller.PERIOD_S)
        assert answer == b"ATI\rELM327 v1.5\r\r>"
        assert (server.evicted, server.client_count) == (1, 4)
        async with asyncio.timeout(10):
            assert await pollers[0].reader.read() == b""  # the silent one was closed
        await keep_being_served(pollers[1:])
        writer.close()
    finally:
        for poller in pollers:
            poller.quiet.set()
        await asyncio.gather(*(poller.task for poller in pollers), return_exceptions=True)
        for poller in pollers:
            poller.writer.close()
        await server.close()


async def test_tcp_evicts_the_client_silent_the_longest_and_closes_its_socket(
    daemon: Daemon,
) -> None:
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0, evict_after_s=0.0)
    port = port_of(await server.start())
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    newcomers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await until(lambda: server.client_count == 4)
        # 0 and 2 speak; 1 and 3 stay silent since connecting, 1 the longest.
        for index in (0, 2):
            assert await ask(*clients[index], b"ATI") == b"ATI\rELM327 v1.5\r\r>"
        for expected_evicted, silent_longest in enumerate((1, 3), start=1):
            newcomers.append(await asyncio.open_connection("127.0.0.1", port))
            assert await ask(*newcomers[-1], b"ATI") == b"ATI\rELM327 v1.5\r\r>"
            assert server.evicted == expected_evicted
            async with asyncio.timeout(10):
                assert await clients[silent_longest][0].read() == b""  # EOF: closed
        assert (server.client_count, server.refused) == (4, 0)
        for reader, writer in (clients[0], clients[2], *newcomers):
            assert await ask(reader, writer, b"010C") == b"010C\r41 0C 0C 80\r\r>"
    finally:
        for _, writer in (*clients, *newcomers):
            writer.close()
        await server.close()


async def test_tcp_drops_a_client_that_never_reads_and_keeps_an_idle_one(daemon: Daemon) -> None:
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0, drain_timeout_s=0.2)
    port = port_of(await server.start())
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    greedy = socket.socket()
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(greedy, ("127.0.0.1", port))
        await until(lambda: server.client_count == 2)
        requests = b"0902\r" * 1000  # about 100 bytes of answer per 5 bytes of request
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            if server.dropped:
                break
            try:
                async with asyncio.timeout(0.5):
                    await loop.sock_sendall(greedy, requests)
            except TimeoutError:
                continue  # the server stopped reading it: its answers are not being read
            except ConnectionError:
                break
        await until(lambda: server.dropped == 1 and server.client_count == 1)
        # The idle client, silent all along, is still served.
        assert await ask(idle_reader, idle_writer, b"ATRV") == b"ATRV\r12.5V\r\r>"
    finally:
        greedy.close()
        idle_writer.close()
        await server.close()


async def test_tcp_start_fails_on_a_busy_port_and_close_is_idempotent(daemon: Daemon) -> None:
    first = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0)
    port = port_of(await first.start())
    second = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=port)
    try:
        with pytest.raises(OSError):  # noqa: PT011 -- the interface promises OSError, any errno
            await second.start()
        await second.close()  # never started: nothing to do
    finally:
        await first.close()
        await first.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_tcp_survives_hostile_bytes(daemon: Daemon) -> None:
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0)
    port = port_of(await server.start())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await ask(reader, writer, b"ATE0") == b"ATE0\rOK\r\r>"
        noise = os.urandom(50_000).replace(b"\r", b"")
        assert await ask(reader, writer, noise) == b"?\r\r>"  # one line, one "?"
        assert await ask(reader, writer, b"\x00" * 10_000) == b"?\r\r>"
        assert await ask(reader, writer, b"03") == b"43 01 06 20\r\r>"
        writer.close()
    finally:
        await server.close()


async def test_tcp_a_client_that_half_closes_gets_every_answer_then_eof(daemon: Daemon) -> None:
    server = Elm327TcpServer(daemon.link(), host="127.0.0.1", port=0)
    port = port_of(await server.start())
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # more answers than it holds
    try:
        slow.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=slow)
        writer.write(b"ATE0\r" + b"03\r" * 20_000)
        writer.write_eof()
        await until(lambda: server.client_count == 1)
        async with asyncio.timeout(10):
            received = await reader.read()  # up to the server's EOF
        assert received == b"ATE0\rOK\r\r>" + b"43 01 06 20\r\r>" * 20_000
        await until(lambda: server.client_count == 0)
        writer.close()
    finally:
        await server.close()
