"""Hostile clients against a running daemon's scan-tool face (DESIGN §7): raw bytes into DoIP TCP
and UDP, ELM327 on TCP and on a pseudo-terminal, and ISO-TP on a udp_multicast bus; floods of
clears from every face at once. After each attack the daemon still cycles, still says `online`,
its ROOT/faults still tells the truth, its memory and its log stay bounded, and a good client
(udsoncan over doipclient, a raw ELM327 `0100`, python-OBD, udsoncan over ISO-TP) is answered.

The attackers are blocking sockets in threads (`asyncio.to_thread`); the daemon runs in the test's
loop, against the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import obd  # type: ignore[import-untyped]  # python-OBD ships no type information
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from carlightd.app.daemon import Service
from carlightd.core.memory import FaultMemory
from carlightd.outputs.scan_tool.doip import DoipServer
from carlightd.outputs.scan_tool.elm327_server import Elm327PtyServer, Elm327TcpServer
from carlightd.outputs.scan_tool.isotp import IsotpServer
from carlightd.store.state import StateStore
from tests.brokers import Subscriber, subscribed
from tests.conftest import running, wait_until
from tests.doip_wire import HEADER, frame, well_formed_replies
from tests.isotp_tester import DEFAULT_PORT, run_isotp_tester
from tests.test_scan_tool_daemon import (
    LAMP_DTC,
    VIN,
    data,
    port_of,
    scan_tool_settings,
    uds_client,
)

pytestmark = pytest.mark.scan_tool

ECU, TESTER = 0x0740, 0x0E80
ISOTP_PORT = DEFAULT_PORT  # the configuration names only the group
# What one attack of thousands of packets may cost in log lines (info and above), all told.
LOG_LINES_PER_ATTACK = 80
# What the whole test may add to the process's resident memory.
RSS_GROWTH_MB = 64
UDS_SIDS = (
    0x10,
    0x11,
    0x14,
    0x19,
    0x22,
    0x27,
    0x28,
    0x2E,
    0x31,
    0x34,
    0x3E,
    0x85,
    0x7F,
    0x00,
    0xFF,
)


def activation(source: int = TESTER, activation_type: int = 0) -> bytes:
    return frame(0x0005, struct.pack("!HBL", source, activation_type, 0))


def diagnostic(request: bytes, source: int = TESTER, target: int = ECU) -> bytes:
    return frame(0x8001, struct.pack("!HH", source, target) + request)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """What the server sends until it closes (a reset counts as closed)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while len(received) < limit and (chunk := sock.recv(65536)):
            received += chunk
    return received


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    received = b""
    while received.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


# --- good clients ---------------------------------------------------------------------------------


def good_uds(port: int) -> dict[str, Any]:
    """A workshop tester's round over DoIP: udsoncan on doipclient."""
    with uds_client(port) as client:
        vin = data(client.read_data_by_identifier([0xF190])).values[0xF190]
        dtcs = {
            d.id: d.status.get_byte_as_int() for d in data(client.get_dtc_by_status_mask(8)).dtcs
        }
    return {"vin": vin, "dtcs": dtcs}


def good_elm(port: int) -> bytes:
    """A raw ELM327 `0100` on a new connection: the PIDs-supported answer."""
    with connect(port) as sock:
        sock.sendall(b"ATZ\rATE0\r0100\r")
        answer = read_until(sock, b">", 3)
    assert b"41 00" in answer, answer
    return answer


def good_python_obd(port: int) -> Any:
    connection = obd.OBD(f"socket://127.0.0.1:{port}", fast=False, timeout=2)
    try:
        assert connection.status() == obd.OBDStatus.CAR_CONNECTED
        return connection.query(obd.commands.RPM).value.magnitude
    finally:
        connection.close()


def good_pty(path: str) -> bytes:
    """An app opening the pseudo-terminal: flush what earlier apps left unread, then `0100`."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        termios.tcflush(fd, termios.TCIOFLUSH)
        os.write(fd, b"ATZ\rATE0\r0100\r")
        answer = b""
        while b"41 00" not in answer or not answer.endswith(b">"):
            answer += os.read(fd, 4096)
        return answer
    finally:
        os.close(fd)


async def good_isotp(group: str, *operations: str) -> list[Any]:
    """udsoncan over can-isotp in a process of its own, on the daemon's bus."""
    return await run_isotp_tester(group, ISOTP_PORT, *operations)


# --- the daemon under attack ----------------------------------------------------------------------


@dataclass
class Target:
    """A running daemon with its scan-tool face, a broken brake lamp, and a watch on MQTT."""

    service: Service
    sub: Subscriber
    root: str
    state_dir: Path
    rss_at_start: float = 0.0
    log_lines: dict[str, int] = field(default_factory=dict)

    @property
    def doip_port(self) -> int:
        return port_of(self.service, "doip")

    @property
    def elm_port(self) -> int:
        return port_of(self.service, "elm327")

    def transport(self, kind: type[Any]) -> Any:
        return next(t for t in self.service.scan_tool.transports if isinstance(t, kind))

    @contextlib.contextmanager
    def attack(self, name: str) -> Iterator[None]:
        """Counts the log lines (info and above) the attack costs, and bounds them."""
        with capture_logs() as logs:
            yield
        lines = sum(entry["log_level"] not in ("debug",) for entry in logs)
        self.log_lines[name] = lines
        assert lines <= LOG_LINES_PER_ATTACK, (name, [entry["event"] for entry in logs])

    async def assert_serving(self, *, elm: bool = True) -> None:
        """The daemon cycles, is online, ROOT/faults holds the broken lamp, memory is bounded, and
        good clients are answered."""
        diagnoser = self.service.daemon.diagnoser
        cycle = diagnoser.cycle
        await wait_until(lambda: diagnoser.cycle >= cycle + 3)
        assert self.sub.on(f"{self.root}/availability")[-1] == b"online"
        await self.sub.wait_for(
            lambda: any(
                f["component"] == "brake_left" and f["status"] == "confirmed"
                for f in self.sub.json_on(f"{self.root}/faults")[-1]["faults"]
            ),
            what="ROOT/faults with the broken brake lamp",
        )
        uds = await asyncio.to_thread(good_uds, self.doip_port)
        assert uds["vin"] == VIN
        assert LAMP_DTC in uds["dtcs"]
        if elm:
            await asyncio.to_thread(good_elm, self.elm_port)
        assert rss_mb() - self.rss_at_start < RSS_GROWTH_MB


@contextlib.asynccontextmanager
async def target(
    broker: tuple[str, int], tmp_path: Path, **overrides: Any
) -> AsyncIterator[Target]:
    state_dir = tmp_path / "state"
    service = Service(scan_tool_settings(broker, state_dir, **overrides))
    root = service.publisher.topics.root
    async with subscribed(*broker, f"{root}/#") as sub, running(service):
        await asyncio.wait_for(service.scan_tool.started.wait(), 10)
        assert not service.scan_tool.problems()
        service.daemon.car.inject("brake_left", "open_circuit")
        it = Target(service, sub, root, state_dir, rss_at_start=rss_mb())
        await it.assert_serving()
        yield it


# --- DoIP TCP -------------------------------------------------------------------------------------


def bad_headers(port: int, count: int) -> int:
    """Connections that open with a random header (and a random body): each is answered with a
    NACK or dropped."""
    rng = random.Random(1)
    for _ in range(count):
        with connect(port) as sock:
            sock.sendall(rng.randbytes(8) + rng.randbytes(rng.randrange(64)))
            sock.shutdown(socket.SHUT_WR)
            read_until_closed(sock)
    return count


def huge_lengths(port: int) -> int:
    """Headers announcing 4 GiB payloads, known and unknown types, then 8 MB of it."""
    sent = 0
    for payload_type in (0x8001, 0x0005, 0x1234):
        with connect(port) as sock:
            sock.sendall(activation() + HEADER.pack(2, 0xFD, payload_type, 0xFFFFFFFF))
            with contextlib.suppress(OSError):
                for _ in range(40):
                    sock.sendall(bytes(65536))
                    sent += 65536
    return sent


def truncated_then_closed(port: int, count: int) -> None:
    whole = activation() + diagnostic(b"\x22\xf1\x90")
    for cut in range(1, count + 1):
        with connect(port) as sock:
            sock.sendall(whole[: cut % len(whole)])


def many_sockets(port: int, count: int) -> int:
    """Sockets opened at once and dropped without a word; how many the server took."""
    held = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                held.append(connect(port))
        return len(held)
    finally:
        for sock in held:
            sock.close()


def slowloris(port: int) -> bytes:
    """A header dribbled a byte at a time, slower than the initial inactivity allows."""
    with connect(port, timeout=10) as sock:
        with contextlib.suppress(OSError):
            for byte in activation():
                sock.sendall(bytes([byte]))
                time.sleep(0.4)  # the attack is the waiting: nothing to await
        return read_until_closed(sock)


def routing_games(port: int) -> list[int]:
    """Two sockets, one address; a socket that changes address; unknown types and addresses.
    The routing activation response codes, in order."""
    codes: list[int] = []

    def code(sock: socket.socket) -> int:
        header = sock.recv(HEADER.size, socket.MSG_WAITALL)
        _, _, payload_type, length = HEADER.unpack(header)
        payload = sock.recv(length, socket.MSG_WAITALL)
        assert payload_type == 0x0006, (payload_type, payload.hex())
        return payload[4]

    with connect(port) as first, connect(port) as second:
        first.sendall(activation(0x0E10))
        codes.append(code(first))
        second.sendall(activation(0x0E10))  # first stays silent to the alive check: taken over
        codes.append(code(second))
        second.sendall(activation(0x0E11))  # another address on an active socket: denied
        codes.append(code(second))
    for source, kind in ((0x0001, 0), (0x0E80, 0x42), (0xFFFF, 0xE1)):
        with connect(port) as sock:
            sock.sendall(activation(source, kind))
            codes.append(code(sock))
    return codes


def every_sid(port: int) -> int:
    """Every service id, bare and with random bytes after it, on one activated socket; then a
    diagnostic message to another target and from another source. Bytes answered."""
    rng = random.Random(2)
    with connect(port, timeout=10) as sock:
        sock.sendall(activation())
        stream = b"".join(
            diagnostic(bytes([sid]) + rng.randbytes(n))
            for sid in range(256)
            if sid != 0x14
            for n in (0, 1, 2, 5, 40)
        )
        sock.sendall(stream + diagnostic(b"\x3e\x00", target=0x1234))
        sock.sendall(diagnostic(b"\x3e\x00", source=0x0E81))  # not ours: NACK and close
        return len(read_until_closed(sock))


async def test_doip_tcp_attacks_leave_the_daemon_serving(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        port = it.doip_port
        server: DoipServer = it.transport(DoipServer)

        with it.attack("bad headers"):
            await asyncio.to_thread(bad_headers, port, 300)
        await wait_until(lambda: server.tally.counts["doip_incorrect_pattern"] >= 250)
        await it.assert_serving(elm=False)

        with it.attack("huge lengths"):
            await asyncio.to_thread(huge_lengths, port)
        await wait_until(lambda: server.tally.counts["doip_message_too_large"] >= 2)
        await it.assert_serving(elm=False)

        with it.attack("truncated frames"):
            await asyncio.to_thread(truncated_then_closed, port, 200)
        await it.assert_serving(elm=False)

        with it.attack("many sockets"):
            taken = await asyncio.to_thread(many_sockets, port, 200)
        assert taken == 200  # accepted by the kernel; the server aborts those over its 8
        await wait_until(lambda: server.open_connections == 0)
        await it.assert_serving(elm=False)

        with it.attack("slowloris"):
            await asyncio.to_thread(slowloris, port)
        await wait_until(lambda: server.tally.counts["doip_inactivity_close"] >= 1)
        await it.assert_serving(elm=False)

        with it.attack("routing games"):
            codes = await asyncio.to_thread(routing_games, port)
        assert codes == [0x10, 0x10, 0x02, 0x00, 0x06, 0x00]
        await it.assert_serving(elm=False)

        with it.attack("every sid"):
            answered = await asyncio.to_thread(every_sid, port)
        assert answered > 1000
        await wait_until(lambda: server.open_connections == 0)
        await it.assert_serving()


# --- DoIP UDP -------------------------------------------------------------------------------------


def udp_flood(port: int, count: int) -> int:
    """Garbage, then valid identification requests, then spoofed announcements and responses of
    another vehicle; the replies that came back."""
    rng = random.Random(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for _ in range(count):
            sock.sendto(rng.randbytes(rng.randrange(80)), ("127.0.0.1", port))
        for _ in range(count):
            sock.sendto(frame(0x0001), ("127.0.0.1", port))
        fake = b"WSPOOFEDVIN000001" + struct.pack("!H", 0x0741) + bytes(12) + b"\x00"
        for _ in range(count):
            sock.sendto(frame(0x0004, fake), ("127.0.0.1", port))
            sock.sendto(frame(0x0003, b"WSPOOFEDVIN000001"), ("127.0.0.1", port))
        replies = 0
        with contextlib.suppress(TimeoutError):
            while sock.recv(4096):
                replies += 1
        return replies


def identified(port: int) -> bytes:
    """A vehicle identification request answered (the reply budget is per second: retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(10):
            sock.sendto(frame(0x0001), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                return sock.recv(4096)
    raise AssertionError("no vehicle identification answer")


async def test_doip_udp_floods_are_rationed_and_discovery_survives(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        server: DoipServer = it.transport(DoipServer)
        with it.attack("udp flood"):
            replies = await asyncio.to_thread(udp_flood, it.doip_port, 3000)
        # 12,000 datagrams; at most the per-second ration answered, never an echo of the flood.
        assert 0 < replies <= server.udp_replies_per_second * 3
        await wait_until(lambda: server.tally.counts["doip_udp_over_budget"] > 1000)
        answer = await asyncio.to_thread(identified, it.doip_port)
        assert VIN.encode() in answer
        await it.assert_serving()


# --- ELM327 on TCP and on a pty -------------------------------------------------------------------


def elm_junk(port: int) -> bytes:
    """A 10 MB line, NULs, every byte value, then a question: the answer comes."""
    with connect(port, timeout=20) as sock:
        for _ in range(160):
            sock.sendall(b"A" * 65536)
        sock.sendall(b"\r" + bytes(10_000) + b"\r" + bytes(range(256)) * 64 + b"\r")
        sock.sendall(b"ATE0\r0100\r")
        return read_until(sock, b"41 00")


def elm_cr_flood(port: int) -> int:
    """A request, then CRs (each repeats it) written without ever reading an answer; bytes the
    server took before it stopped reading or dropped the client."""
    sent = 0
    with connect(port, timeout=30) as sock:
        sock.sendall(b"0100\r")
        with contextlib.suppress(OSError):
            for _ in range(2000):
                sock.sendall(b"\r" * 65536)
                sent += 65536
    return sent


def elm_connection_flood(port: int, count: int) -> int:
    """Connections one after the other; how many the server refused (reset) while earlier ones
    were still closing and every place was taken by a client that had just spoken."""
    refused = 0
    for _ in range(count):
        try:
            with connect(port) as sock:
                sock.sendall(b"ATZ\r0100\r")
        except (ConnectionResetError, BrokenPipeError):
            refused += 1
    return refused


async def test_elm327_tcp_attacks_leave_the_daemon_serving(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        server: Elm327TcpServer = it.transport(Elm327TcpServer)
        with it.attack("10 MB line and binary"):
            answer = await asyncio.to_thread(elm_junk, it.elm_port)
        assert b"41 00" in answer
        await it.assert_serving()

        with it.attack("CR flood, never read"):
            sent = await asyncio.to_thread(elm_cr_flood, it.elm_port)
        assert sent < 2000 * 65536  # the server stopped taking them: bounded buffers
        await wait_until(lambda: server.client_count == 0, timeout_s=30)
        assert server.dropped >= 1
        await it.assert_serving()

        with it.attack("connection flood"):
            refused = await asyncio.to_thread(elm_connection_flood, it.elm_port, 300)
        assert refused < 300
        await wait_until(lambda: server.client_count == 0)
        await it.assert_serving()
        rpm = await asyncio.to_thread(good_python_obd, it.elm_port)
        assert rpm > 500


def pty_junk(path: str) -> int:
    """1 MB of junk lines, NULs and binary, CR floods, none of the answers read."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    written = 0
    try:
        for chunk in (b"A" * 65536, bytes(65536), bytes(range(256)) * 256, b"0100\r" * 13000):
            for _ in range(4):
                written += os.write(fd, chunk)
    finally:
        os.close(fd)
    return written


async def test_elm327_pty_attacks_leave_the_daemon_serving(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path, scan_tool__elm327_pty=True) as it:
        server: Elm327PtyServer = it.transport(Elm327PtyServer)
        path = it.service.scan_tool.endpoints["elm327_pty"]
        with it.attack("pty junk"):
            await asyncio.to_thread(pty_junk, path)
        await wait_until(lambda: server.lines >= 13000 * 4, timeout_s=30)
        assert server.lost_output > 0  # nobody read: lost, like on a serial line
        answer = await asyncio.to_thread(good_pty, path)
        assert b"41 00" in answer
        await it.assert_serving()


# --- ISO-TP on udp_multicast ----------------------------------------------------------------------


def isotp_frame(*payload: int) -> can.Message:
    return can.Message(arbitration_id=0x7E0, data=bytes(payload), is_extended_id=False, is_fd=False)


def isotp_attack(group: str, count: int) -> None:
    """Malformed PCIs, random frames, back-to-back clears, a first frame and then silence (a
    flood: udp_multicast may lose some of it)."""
    rng = random.Random(4)
    bus = can.Bus(interface="udp_multicast", channel=group, port=ISOTP_PORT)
    try:
        for payload in ((0x40, 1, 2), (0xF0,), (), (0x00, 0x00), (0x07, 0x22), (0x21, 1), (0x30,)):
            bus.send(isotp_frame(*payload))
        for _ in range(count):  # random PCI and bytes
            bus.send(isotp_frame(*rng.randbytes(rng.randrange(9))))
        for _ in range(count // 10):  # clears, back to back
            bus.send(isotp_frame(0x04, 0x14, 0xFF, 0xFF, 0xFF))
        bus.send(isotp_frame(0x1F, 0xFF, 0x22, 0xF1, 0x90, 0, 0, 0))  # a first frame, silence
    finally:
        bus.shutdown()


def junk_datagrams(group: str, count: int) -> None:
    """Datagrams on the bus that are not even CAN frames."""
    rng = random.Random(5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        for _ in range(count):
            sock.sendto(rng.randbytes(rng.randrange(40)), (group, ISOTP_PORT))


def isotp_send(group: str, *payload: int) -> None:
    bus = can.Bus(interface="udp_multicast", channel=group, port=ISOTP_PORT)
    try:
        bus.send(isotp_frame(*payload))
    finally:
        bus.shutdown()


async def test_isotp_attacks_leave_the_daemon_serving(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    group = f"239.74.{random.randrange(256)}.{random.randrange(1, 255)}"
    async with target(broker, tmp_path, scan_tool__isotp=True, scan_tool__can_channel=group) as it:
        server: IsotpServer = it.transport(IsotpServer)
        counts = server.tally.counts
        with it.attack("isotp frames"):
            await asyncio.to_thread(isotp_attack, group, 2000)
            await wait_until(lambda: counts["isotp_InvalidCanDataError"] >= 100)
            # Sent again until some arrive: a flood that fills the receiving socket is dropped
            # by the kernel, and udp_multicast has no retransmission.
            async with asyncio.timeout(40):
                while counts["isotp_bus_error"] == 0:
                    await asyncio.to_thread(junk_datagrams, group, 20)
                    with contextlib.suppress(TimeoutError):
                        await wait_until(lambda: counts["isotp_bus_error"] >= 1, 5)
            # A request whose answer takes several frames, and never a flow control: the server
            # gives the answer up after its send timeout (asked again if the datagram was lost).
            async with asyncio.timeout(40):
                while counts["isotp_send_failed"] == 0:
                    await asyncio.to_thread(isotp_send, group, 0x02, 0x19, 0x0A)
                    with contextlib.suppress(TimeoutError):
                        await wait_until(lambda: counts["isotp_send_failed"] >= 1, 8)
        vin, dtcs = await good_isotp(group, "vin", "dtcs")
        assert vin == VIN
        assert LAMP_DTC in {dtc for dtc, _ in dtcs}
        await it.assert_serving()


# --- clear floods ---------------------------------------------------------------------------------


def doip_clears(port: int, count: int) -> int:
    with connect(port, timeout=30) as sock:
        sock.sendall(activation())
        read_until(sock, b"\x00\x06")
        positive = 0
        for _ in range(count):
            sock.sendall(diagnostic(b"\x14\xff\xff\xff"))
            positive += b"\x07\x40\x0e\x80\x54" in read_until(sock, b"\x07\x40\x0e\x80\x54")
    return positive


def elm_clears(port: int, count: int) -> int:
    with connect(port, timeout=30) as sock:
        sock.sendall(b"ATE0\r")
        read_until(sock, b">")
        positive = 0
        for _ in range(count):
            sock.sendall(b"04\r")
            positive += b"44" in read_until(sock, b">")
    return positive


async def test_clear_floods_from_every_face_keep_events_and_state_consistent(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        it.service.daemon.car.inject("battery", "dead_cell")
        memory = it.service.daemon.diagnoser.memory
        seq_before = memory.seq
        events = f"{it.root}/events"
        with it.attack("clear flood"):
            doip_done, elm_done = await asyncio.gather(
                asyncio.to_thread(doip_clears, it.doip_port, 400),
                asyncio.to_thread(elm_clears, it.elm_port, 400),
            )
        assert (doip_done, elm_done) == (400, 400)
        assert memory.seq > seq_before  # the faults came back and were cleared again
        # Every event reached the broker, in order, each seq once: no gap, no repeat.
        await it.sub.wait_for(
            lambda: any(e["seq"] == memory.seq for e in it.sub.json_on(events)),
            what="the last event on MQTT",
        )
        seqs = [e["seq"] for e in it.sub.json_on(events)]
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        # The state file is whole and holds the same sequence.
        runner = it.service.daemon.runner
        await wait_until(lambda: runner.store.last_saved_seq >= memory.seq)
        saved = FaultMemory(2, 2)
        StateStore(it.state_dir, it.service.settings.vehicle.id).load(saved)
        assert saved.seq >= seqs[-1]
        await it.assert_serving()


# --- fuzz: raw bytes into each entry point --------------------------------------------------------

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
uds_requests = st.tuples(
    st.one_of(st.sampled_from(UDS_SIDS), st.integers(0, 255)), st.binary(max_size=12)
).map(lambda parts: bytes([parts[0]]) + parts[1])
doip_messages = st.one_of(
    uds_requests.map(diagnostic),
    st.builds(
        lambda payload_type, version, body: frame(payload_type, body, version),
        st.sampled_from([0x0001, 0x0005, 0x0007, 0x0008, 0x4001, 0x4003, 0x8001, 0xFFFF]),
        st.sampled_from([0x02, 0x03, 0xFF]),
        st.binary(max_size=16),
    ),
    st.builds(
        HEADER.pack,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
        st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    ),
    st.binary(max_size=24),
)
doip_streams = st.tuples(st.booleans(), st.lists(doip_messages, min_size=1, max_size=5)).map(
    lambda parts: (activation() if parts[0] else b"") + b"".join(parts[1])
)
datagrams = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda payload_type, version, body: frame(payload_type, body, version),
        st.sampled_from([0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x4001, 0x4003, 0x8001]),
        st.sampled_from([0x02, 0x03, 0xFF, 0x00]),
        st.binary(max_size=40),
    ),
)
elm_lines = st.one_of(
    st.sampled_from(
        [
            "ATZ",
            "ATE0",
            "ATH1",
            "ATS0",
            "ATL1",
            "ATCAF0",
            "ATR0",
            "ATSP1",
            "ATSP0",
            "ATSH7E0",
            "ATCRA7E8",
            "ATD",
            "ATRV",
            "ATDPN",
            "0100",
            "0101",
            "010C",
            "03",
            "04",
            "07",
            "0902",
            "01",
            "0",
            "",
            "7E0",
            "02010C",
            "1",
            "AT",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
).map(str.encode)
elm_streams = st.lists(
    st.one_of(elm_lines.map(lambda line: line + b"\r"), st.binary(max_size=40)),
    min_size=1,
    max_size=12,
).map(b"".join)
ELM_OUTPUT = frozenset(range(0x20, 0x7F)) | {0x0D, 0x0A}


async def test_fuzzed_doip_tcp_streams(broker: tuple[str, int], tmp_path: Path) -> None:
    async with target(broker, tmp_path) as it:
        port = it.doip_port

        @FUZZ
        @given(stream=doip_streams)
        def fuzz(stream: bytes) -> None:
            with connect(port) as sock:
                with contextlib.suppress(OSError):  # the server may close first: its right
                    sock.sendall(stream)
                    sock.shutdown(socket.SHUT_WR)
                received = read_until_closed(sock)
            assert well_formed_replies(received), received.hex()

        with it.attack("doip fuzz"):
            await asyncio.to_thread(fuzz)
        server: DoipServer = it.transport(DoipServer)
        await wait_until(lambda: server.open_connections == 0)
        await it.assert_serving()


async def test_fuzzed_doip_datagrams(broker: tuple[str, int], tmp_path: Path) -> None:
    async with target(broker, tmp_path) as it:
        port = it.doip_port

        @FUZZ
        @given(datagram=datagrams)
        def fuzz(datagram: bytes) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.05)
                sock.sendto(datagram, ("127.0.0.1", port))
                with contextlib.suppress(TimeoutError):
                    reply = sock.recv(4096)
                    assert well_formed_replies(reply), reply.hex()

        with it.attack("udp fuzz"):
            await asyncio.to_thread(fuzz)
        assert VIN.encode() in await asyncio.to_thread(identified, port)
        await it.assert_serving()


async def test_fuzzed_elm327_streams(broker: tuple[str, int], tmp_path: Path) -> None:
    async with target(broker, tmp_path) as it:
        port = it.elm_port

        @FUZZ
        @given(stream=elm_streams)
        def fuzz(stream: bytes) -> None:
            with connect(port) as sock:
                with contextlib.suppress(OSError):
                    sock.sendall(stream)
                    sock.shutdown(socket.SHUT_WR)
                received = read_until_closed(sock)
            assert set(received) <= ELM_OUTPUT, received

        with it.attack("elm327 fuzz"):
            await asyncio.to_thread(fuzz)
        server: Elm327TcpServer = it.transport(Elm327TcpServer)
        await wait_until(lambda: server.client_count == 0)
        await it.assert_serving()


# --- found: sockets a hostile client can hold -----------------------------------------------------


def raw_vin(port: int) -> bytes:
    """Routing activation and 0x22 F190 on a bare socket: the answer's bytes."""
    with connect(port) as sock:
        sock.sendall(activation() + diagnostic(b"\x22\xf1\x90"))
        return read_until(sock, b"\x62\xf1\x90")


def hold_activated_doip_sockets(port: int, count: int) -> list[socket.socket]:
    """`count` sockets, each with routing activated for its own tester address, then silent:
    they never read again, never answer an alive check."""
    held = []
    for index in range(count):
        sock = connect(port)
        held.append(sock)
        sock.sendall(activation(0x0E00 + index))
        read_until(sock, b"\x10")  # response code 0x10: activated
    return held


# Found: the 9th TCP connection was aborted at once, so eight silent activated sockets locked every
# tester out for general_inactivity (300 s); now a new activation alive-checks the registered
# sockets and takes the place of a silent one (ISO 13400-2 socket handling).
async def test_silent_activated_doip_sockets_do_not_lock_a_tester_out(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        server: DoipServer = it.transport(DoipServer)
        held = await asyncio.to_thread(hold_activated_doip_sockets, it.doip_port, 8)
        try:
            await wait_until(lambda: server.open_connections == server.max_sockets)
            # A raw tester: doipclient leaves its sockets open when its connection is reset.
            answer = await asyncio.to_thread(raw_vin, it.doip_port)
            assert VIN.encode() in answer
        finally:
            for sock in held:
                sock.close()


# Found: four connections that never sent a byte held every ELM327 slot for as long as they stayed
# open; now the one silent longest makes room for a newcomer (README, "ELM327").
async def test_silent_elm327_connections_do_not_lock_an_app_out(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    async with target(broker, tmp_path) as it:
        server: Elm327TcpServer = it.transport(Elm327TcpServer)
        held = [connect(it.elm_port) for _ in range(4)]
        try:
            await wait_until(lambda: server.client_count == 4)
            async with asyncio.timeout(20):
                while True:
                    try:
                        await asyncio.to_thread(good_elm, it.elm_port)
                        break
                    except OSError:
                        await asyncio.sleep(1)
        finally:
            for sock in held:
                sock.close()
