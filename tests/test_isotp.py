"""UDS over ISO-TP on python-can: a udsoncan tester in another process on a udp_multicast bus,
hostile frames from this one, and an in-process `virtual` bus.

Every test has its own multicast group and port: on Linux a socket bound to a port receives the
datagrams of every group joined on that port, so distinct groups alone do not keep tests apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import can
import isotp
import pytest
import udsoncan
from udsoncan.client import Client
from udsoncan.connections import PythonIsoTpConnection

from carlightd.outputs.scan_tool.isotp import IsotpServer
from carlightd.outputs.scan_tool.uds import UdsServer
from tests.isotp_tester import run_isotp_tester
from tests.scan_tool_memories import BRAKE_OPEN, CONFIRMED, BrakeLampMemory

VIN = "WCARLIGHT0D000042"
DTCS = [(0xC10116, 0x2F), (0x911300, 0x09), (0xA02A1C, 0x08)]


async def tiny_uds(request: bytes) -> bytes | None:
    """Enough of a UDS server to carry requests over the transport."""
    if request == b"\x22\xf1\x90":
        return b"\x62\xf1\x90" + VIN.encode()
    if request[:2] == b"\x19\x02":
        records = b"".join(dtc.to_bytes(3, "big") + bytes([status]) for dtc, status in DTCS)
        return b"\x59\x02\xff" + records
    if request[:3] == b"\x2e\xf1\x90" and len(request) == 20:
        return b"\x6e\xf1\x90"
    if request[:1] == b"\x14":
        return b"\x54"
    return b"\x7f" + request[:1] + b"\x11"


@pytest.fixture
def channel() -> tuple[str, int]:
    """A multicast group and a UDP port of this test's own."""
    group = f"239.74.{random.randrange(256)}.{random.randrange(1, 255)}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
    return group, port


@contextlib.asynccontextmanager
async def serving(
    group: str, port: int, handle: Callable[[bytes], Any] = tiny_uds
) -> AsyncIterator[IsotpServer]:
    server = IsotpServer(
        handle,
        interface="udp_multicast",
        channel=group,
        request_id=0x7E0,
        response_id=0x7E8,
        bus_options={"port": port},
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.contextmanager
def raw_bus(group: str, port: int) -> Iterator[can.BusABC]:
    bus = can.Bus(interface="udp_multicast", channel=group, port=port)
    try:
        yield bus
    finally:
        bus.shutdown()


def threads() -> set[threading.Thread]:
    """Running threads, less the loop's executor workers (`asyncio.to_thread` keeps them)."""
    return {thread for thread in threading.enumerate() if not thread.name.startswith("asyncio_")}


def frame(*data: int) -> can.Message:
    return can.Message(arbitration_id=0x7E0, data=bytes(data), is_extended_id=False, is_fd=False)


# --- a tester in another process ------------------------------------------------------------------


async def test_multi_frame_answers_to_a_tester_in_another_process(
    channel: tuple[str, int],
) -> None:
    group, port = channel
    async with serving(group, port) as server:
        vin, dtcs, written, cleared = await run_isotp_tester(
            group, port, "vin", "dtcs", "write_vin", "clear"
        )
        assert server.answered == 4
    assert vin == VIN  # 20 bytes: a first frame and two consecutive frames
    assert dtcs == [list(dtc) for dtc in DTCS]
    assert written is True  # a 20-byte request: our flow control worked
    assert cleared is True


async def test_start_names_the_bus_and_close_leaves_no_thread(channel: tuple[str, int]) -> None:
    group, port = channel
    before = threads()
    server = IsotpServer(tiny_uds, channel=group, bus_options={"port": port})
    where = await server.start()
    assert where == f"udp_multicast {group}, request 0x7E0, response 0x7E8"
    assert len(threads() - before) >= 3  # the stack's two, ours, the notifier's
    await server.close()
    assert threads() - before == set()
    await server.close()  # idempotent


@pytest.mark.parametrize(
    ("interface", "channel"), [("udp_multicast", "not-a-group"), ("no_such_interface", "x")]
)
async def test_a_bus_that_cannot_open_raises_and_leaves_nothing(
    interface: str, channel: str
) -> None:
    before = threads()
    server = IsotpServer(tiny_uds, interface=interface, channel=channel)
    with pytest.raises((OSError, can.CanError)):
        await server.start()
    assert threads() - before == set()
    await server.close()


# --- hostile frames -------------------------------------------------------------------------------


async def test_malformed_frames_never_stop_the_server(channel: tuple[str, int]) -> None:
    group, port = channel
    async with serving(group, port) as server:
        counts = server.tally.counts
        with raw_bus(group, port) as bus:
            for message in (
                frame(0x40, 1, 2, 3),  # a PCI type ISO 15765-2 does not define
                frame(0xF0),
                frame(),  # no data at all
                frame(0x00, 0x00),  # a single frame of length 0
                frame(0x07, 0x22, 0xF1),  # says 7 bytes, carries 2
                frame(0x21, 1, 2, 3),  # a consecutive frame nobody asked for
                frame(0x30, 0, 0),  # a flow control while we send nothing
            ):
                bus.send(message)
            await until(lambda: counts["isotp_InvalidCanDataError"] >= 5)
            await until(lambda: counts["isotp_UnexpectedConsecutiveFrameError"] >= 1)
            await until(lambda: counts["isotp_UnexpectedFlowControlError"] >= 1)

            # Not even a CAN frame: python-can cannot decode it, the notifier keeps going.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.sendto(b"\xc1garbage", (group, port))
                # msgpack of {"arbitration_id": "x"}: decodes, but is no CAN message.
                sock.sendto(b"\x81\xaearbitration_id\xa1x", (group, port))
            await until(lambda: counts["isotp_bus_error"] >= 2)

            # A first frame announcing 4095 bytes, then silence: the reception times out.
            bus.send(frame(0x1F, 0xFF, 0x22, 0xF1, 0x90, 0, 0, 0))
            await until(lambda: counts["isotp_ConsecutiveFrameTimeoutError"] >= 1)
            bus.send(frame(0x1F, 0xFF, 0x22, 0xF1, 0x90, 0, 0, 0))  # and again, interrupted
        vin, dtcs = await run_isotp_tester(group, port, "vin", "dtcs")
    assert vin == VIN
    assert len(dtcs) == 3
    assert server.answered == 2  # nothing malformed was taken for a request


async def test_a_handler_that_fails_costs_one_answer(channel: tuple[str, int]) -> None:
    group, port = channel
    calls = 0

    async def flaky(request: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await tiny_uds(request)

    async with serving(group, port, flaky) as server:
        with raw_bus(group, port) as bus:
            bus.send(frame(0x03, 0x22, 0xF1, 0x90))
            await until(lambda: server.tally.counts["isotp_handler_failed"] == 1)
        [vin] = await run_isotp_tester(group, port, "vin")
    assert vin == VIN


# --- one process, a virtual bus -------------------------------------------------------------------


def virtual_session(channel: str) -> dict[str, Any]:
    config = udsoncan.configs.default_client_config.copy()
    config["data_identifiers"] = {0xF190: udsoncan.AsciiCodec(17)}
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = can.Notifier(bus, [], timeout=0.1)
    try:
        stack = isotp.NotifierBasedCanStack(
            bus,
            notifier,
            address=isotp.Address(isotp.AddressingMode.Normal_11bits, rxid=0x7E8, txid=0x7E0),
        )
        with Client(PythonIsoTpConnection(stack), config=config, request_timeout=5) as client:
            vin = client.read_data_by_identifier(0xF190).service_data.values[0xF190]
            dtcs = client.get_dtc_by_status_mask(0xFF).service_data.dtcs
            written = client.write_data_by_identifier(0xF190, VIN).positive
        return {"vin": vin, "dtcs": [dtc.id for dtc in dtcs], "written": written}
    finally:
        notifier.stop()
        bus.shutdown()


async def test_virtual_bus_in_one_process() -> None:
    channel = f"carlightd-{uuid.uuid4().hex}"
    server = IsotpServer(tiny_uds, interface="virtual", channel=channel)
    assert await server.start() == f"virtual {channel}, request 0x7E0, response 0x7E8"
    try:
        result = await asyncio.to_thread(virtual_session, channel)
    finally:
        await server.close()
    assert result == {"vin": VIN, "dtcs": [dtc for dtc, _ in DTCS], "written": True}


def raw_isotp_exchange(
    channel: str, request: bytes, answers: int, on_answer: Callable[[bytes], None]
) -> list[bytes]:
    """A bare can-isotp tester on a virtual bus: send one PDU, collect `answers` PDUs (telling
    `on_answer` of each as it comes)."""
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = can.Notifier(bus, [], timeout=0.1)
    stack = isotp.NotifierBasedCanStack(
        bus,
        notifier,
        address=isotp.Address(isotp.AddressingMode.Normal_11bits, rxid=0x7E8, txid=0x7E0),
    )
    stack.start()
    try:
        stack.send(bytearray(request))
        received: list[bytes] = []
        for _ in range(answers):
            pdu = stack.recv(block=True, timeout=10)
            assert pdu is not None, f"{len(received)} answers of {answers}"
            received.append(bytes(pdu))
            on_answer(bytes(pdu))
        return received
    finally:
        stack.stop()
        notifier.stop()
        bus.shutdown()


async def test_response_pending_while_the_answer_is_slow() -> None:
    loop = asyncio.get_running_loop()
    opened = asyncio.Event()

    async def slow_clear(request: bytes) -> bytes | None:
        if request[:1] == b"\x14":
            await opened.wait()
        return await tiny_uds(request)

    def open_on_pending(answer: bytes) -> None:
        if answer == b"\x7f\x14\x78":
            loop.call_soon_threadsafe(opened.set)

    channel = f"carlightd-{uuid.uuid4().hex}"
    server = IsotpServer(slow_clear, interface="virtual", channel=channel)
    await server.start()
    try:
        answers = await asyncio.to_thread(
            raw_isotp_exchange, channel, b"\x14\xff\xff\xff", 2, open_on_pending
        )
    finally:
        await server.close()
    assert answers == [b"\x7f\x14\x78", b"\x54"]


# --- the real UDS server behind the transport -----------------------------------------------------


async def test_the_uds_server_over_isotp(channel: tuple[str, int]) -> None:
    group, port = channel
    car = BrakeLampMemory(VIN)
    ecu = UdsServer(car.link())
    async with serving(group, port, ecu.handle):
        vin, before, cleared, after = await run_isotp_tester(
            group, port, "vin", "dtcs", "clear", "dtcs"
        )
    assert vin == VIN
    assert before == [[BRAKE_OPEN.uds_code, CONFIRMED]]
    assert cleared is True
    assert after == []
    assert car.clears == 1
