"""Scan-tool round trips against a running `carlightd run` on loopback (part of `make bench`;
alone: `.venv/bin/python -m bench.scan_tool`).

The daemon runs as its own process with the default car at its default 1 s cycle and a confirmed
lamp fault; the clients run in this process, one request at a time, each timed from the request
leaving to the whole answer read:
- `uds_rtt_ms_*`: UDS over DoIP with udsoncan over doipclient (what a workshop script uses),
  0x22 (VIN) and 0x19 0x02 (DTCs by status mask), `requests` of each;
- `uds_raw_rtt_ms_*`: the same PDUs over a bare socket (DoIP framing by hand, no client library):
  what the daemon and the network cost, without the client's own overhead;
- `uds_handler_us_*`: the UDS server alone, in this process (no socket): the daemon's share;
- `elm327_rtt_ms_*`: ELM327 lines (`010C` engine speed, `03` stored codes) over a bare socket, and
  `elm327_obd_rtt_ms_*` the same through python-OBD's `query`.
The difference between the three UDS figures says where the time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

HOST = "127.0.0.1"
LOGICAL_ADDRESS = 0x0740
TESTER_ADDRESS = 0x0E80
LIBRARY_TESTER_ADDRESS = 0x0E81  # udsoncan's, while the bare client stays connected
T = TypeVar("T")
READ_VIN = bytes([0x22, 0xF1, 0x90])
DTCS_BY_STATUS = bytes([0x19, 0x02, 0xFF])


def step(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def percentiles(name: str, samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"{name}_p50": round(statistics.median(ordered), 3),
        f"{name}_p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
        f"{name}_max": round(ordered[-1], 3),
    }


def timed_ms(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# --- bare clients -----------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the DoIP server closed the connection")
        data += chunk
    return bytes(data)


class RawDoip:
    """ISO 13400-2 framing by hand: routing activation, then one diagnostic message at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        activation = struct.pack(">HB4x", TESTER_ADDRESS, 0x00)
        payload_type, payload = self._exchange(0x0005, activation)
        if payload_type != 0x0006 or payload[4] != 0x10:
            raise ConnectionError(f"routing activation refused: {payload.hex()}")

    def _send(self, payload_type: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">BBHI", 0x02, 0xFD, payload_type, len(payload)) + payload)

    def _receive(self) -> tuple[int, bytes]:
        _, _, payload_type, length = struct.unpack(">BBHI", _recv_exactly(self.sock, 8))
        return payload_type, _recv_exactly(self.sock, length)

    def _exchange(self, payload_type: int, payload: bytes) -> tuple[int, bytes]:
        self._send(payload_type, payload)
        return self._receive()

    def request(self, pdu: bytes) -> bytes:
        self._send(0x8001, struct.pack(">HH", TESTER_ADDRESS, LOGICAL_ADDRESS) + pdu)
        while True:  # the acknowledgement (0x8002), then the answer (0x8001)
            payload_type, payload = self._receive()
            if payload_type == 0x8001:
                return payload[4:]
            if payload_type == 0x0007:  # an alive check: this tester is still here
                self._send(0x0008, struct.pack(">H", TESTER_ADDRESS))
            elif payload_type != 0x8002:
                raise ConnectionError(f"unexpected DoIP payload type {payload_type:#06x}")

    def close(self) -> None:
        self.sock.close()


class RawElm327:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for line in ("ATZ", "ATE0", "ATL0", "ATSP0"):
            self.command(line)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r")
        answer = bytearray()
        while not answer.endswith(b">"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the ELM327 interface closed the connection")
            answer += chunk
        return answer.decode("ascii", "replace")

    def close(self) -> None:
        self.sock.close()


# --- the daemon -------------------------------------------------------------------------------


@contextlib.contextmanager
def a_daemon(state_dir: str) -> Iterator[tuple[int, int, dict[str, str]]]:
    doip_port, elm_port = free_port(), free_port()
    env = {
        **os.environ,
        "CARLIGHTD_MQTT__BASE_TOPIC": f"bench-scan-{os.getpid()}",
        "CARLIGHTD_DIAGNOSTICS__STATE_DIR": state_dir,
        "CARLIGHTD_HOMEASSISTANT__DISCOVERY": "false",
        "CARLIGHTD_SCAN_TOOL__DOIP_PORT": str(doip_port),
        "CARLIGHTD_SCAN_TOOL__ELM327_PORT": str(elm_port),
        "CARLIGHTD_SCAN_TOOL__DOIP": "true",
        "CARLIGHTD_SCAN_TOOL__ELM327": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "carlightd", "run", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield doip_port, elm_port, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _connect_with_retry(connect: Callable[[], T], timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_for_confirmed_dtc(doip: RawDoip, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = doip.request(bytes([0x19, 0x02, 0x08]))  # confirmedDTC
        if answer[:2] == b"\x59\x02" and len(answer) > 3:
            return
        time.sleep(0.2)
    raise TimeoutError("no confirmed DTC over UDS within 30 s")


# --- the measurements -------------------------------------------------------------------------


def _udsoncan_rtts(port: int, requests: int) -> tuple[list[float], list[float]]:
    import udsoncan  # noqa: PLC0415 - only the benchmark needs the client side
    from doipclient.client import DoIPClient  # noqa: PLC0415
    from doipclient.connectors import DoIPClientUDSConnector  # noqa: PLC0415
    from udsoncan.client import Client  # noqa: PLC0415

    config = dict(udsoncan.configs.default_client_config)
    config["data_identifiers"] = {0xF190: udsoncan.AsciiCodec(17)}
    doip = DoIPClient(  # type: ignore[no-untyped-call]  # doipclient has no annotations
        HOST, LOGICAL_ADDRESS, tcp_port=port, client_logical_address=LIBRARY_TESTER_ADDRESS
    )
    connector = DoIPClientUDSConnector(doip)  # type: ignore[no-untyped-call]
    with Client(connector, config=config) as client:  # type: ignore[arg-type]
        vin = timed_ms(lambda: client.read_data_by_identifier([0xF190]), requests)
        dtcs = timed_ms(lambda: client.get_dtc_by_status_mask(0xFF), requests)
    doip.close()  # type: ignore[no-untyped-call]
    return vin, dtcs


def _handler_us(requests: int) -> dict[str, float]:
    """The UDS server alone, over a view of the default car with a confirmed lamp fault."""
    from carlightd import config  # noqa: PLC0415
    from carlightd.core.domain import Kind  # noqa: PLC0415
    from carlightd.outputs.scan_tool.uds import UdsServer  # noqa: PLC0415
    from carlightd.outputs.scan_tool.view import (  # noqa: PLC0415
        ScanToolLink,
        supported_entries,
        view_of,
    )
    from carlightd.tools.workbench import Bench  # noqa: PLC0415

    settings = config.load(config.packaged_default())
    bench = Bench(settings_=settings)
    bench.car.inject("tail_left", "open_circuit")
    report = bench.run(10)
    view = view_of(
        report,
        settings.vehicle.vin,
        supported_entries({Kind(c.kind) for c in settings.components}),
    )

    async def no_clear() -> int:
        return 0

    server = UdsServer(ScanToolLink(view=lambda: view, clear=no_clear))

    async def measure(pdu: bytes) -> list[float]:
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            await server.handle(pdu)
            samples.append((time.perf_counter() - started) * 1e6)
        return samples

    results: dict[str, float] = {}
    for name, pdu in (("0x22", READ_VIN), ("0x19_02", DTCS_BY_STATUS)):
        samples = asyncio.run(measure(pdu))
        results[f"uds_handler_us_p50_{name}"] = round(statistics.median(samples), 1)
    return results


def _obd_rtts(port: int, requests: int) -> list[float]:
    import obd  # type: ignore[import-untyped]  # noqa: PLC0415 - a test and benchmark client only

    connection = obd.OBD(f"socket://{HOST}:{port}", fast=False, timeout=5)
    try:
        return timed_ms(lambda: connection.query(obd.commands.RPM, force=True), requests)
    finally:
        connection.close()


def scan_tool_rtts(requests: int = 1000) -> dict[str, Any]:
    results: dict[str, Any] = {"scan_tool_requests_each": requests}
    with tempfile.TemporaryDirectory() as state_dir, a_daemon(state_dir) as (doip_port, elm, env):
        doip = _connect_with_retry(lambda: RawDoip(doip_port))
        subprocess.run(
            [sys.executable, "-m", "carlightd", "inject", "tail_left", "open_circuit"],
            env=env,
            check=True,
            capture_output=True,
        )
        _wait_for_confirmed_dtc(doip)
        step(f"UDS over DoIP with udsoncan + doipclient, {requests} x 0x22 and 0x19 02")
        vin, dtcs = _udsoncan_rtts(doip_port, requests)
        results.update(percentiles("uds_rtt_ms", vin + dtcs))
        results.update(percentiles("uds_rtt_ms_0x22", vin))
        results.update(percentiles("uds_rtt_ms_0x19_02", dtcs))
        step(f"UDS over DoIP, bare socket, {requests} x 0x22 and 0x19 02")
        # Timed answers are real answers: the VIN, and the confirmed lamp fault (B1200-13).
        assert doip.request(READ_VIN)[:3] == b"\x62\xf1\x90"
        assert b"\x92\x00\x13" in doip.request(DTCS_BY_STATUS)
        raw_vin = timed_ms(lambda: doip.request(READ_VIN), requests)
        raw_dtcs = timed_ms(lambda: doip.request(DTCS_BY_STATUS), requests)
        doip.close()
        results.update(percentiles("uds_raw_rtt_ms", raw_vin + raw_dtcs))
        step(f"ELM327 on TCP, bare socket, {requests} x 010C and 03")
        elm327 = RawElm327(elm)
        assert "41 0C" in elm327.command("010C"), "no engine speed from the ELM327 interface"
        assert elm327.command("03").lstrip().startswith("43"), "no mode 03 answer"
        rpm = timed_ms(lambda: elm327.command("010C"), requests)
        codes = timed_ms(lambda: elm327.command("03"), requests)
        elm327.close()
        results.update(percentiles("elm327_rtt_ms", rpm + codes))
        step(f"ELM327 through python-OBD, {requests} x RPM")
        results.update(percentiles("elm327_obd_rtt_ms", _obd_rtts(elm, requests)))
    step(f"the UDS server alone, {requests} x each")
    results.update(_handler_us(requests))
    return results


if __name__ == "__main__":
    import json

    from carlightd import logs

    logs.configure(level="ERROR")
    print(json.dumps(scan_tool_rtts(), indent=2))
