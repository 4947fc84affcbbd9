"""The scan-tool face as an output (DESIGN §1, §7): it keeps the latest cycle's view and serves it
on every transport the configuration turns on, beside the MQTT publisher.

A transport that cannot start (a port in use, a CAN bus that will not open) is a problem the
daemon reports (log, ROOT/status, systemd status) and retries, never a reason to stop diagnosing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Protocol

from carlightd import logs
from carlightd.config import ScanToolConfig
from carlightd.core.diagnoser import CycleReport
from carlightd.core.domain import Kind
from carlightd.core.ports import Workshop
from carlightd.outputs.scan_tool.doip import DoipServer
from carlightd.outputs.scan_tool.elm327_server import Elm327PtyServer, Elm327TcpServer
from carlightd.outputs.scan_tool.uds import UdsServer
from carlightd.outputs.scan_tool.view import (
    ScanToolLink,
    VehicleView,
    supported_entries,
    view_of,
)
from carlightd.runtime.waiting import wait_any

log = logs.get("carlightd.scan_tool")

# A transport that could not start is tried again this often.
RETRY_S = 5.0


class Transport(Protocol):
    name: str

    async def start(self) -> str:
        """Begin serving; where it serves. Raises OSError or can.CanError, leaving nothing open."""
        ...

    async def close(self) -> None: ...


class ScanToolOutput:
    """UDS over DoIP and ISO-TP, OBD-II through an ELM327, all answering from one view."""

    name = "scan_tool"

    def __init__(
        self, config: ScanToolConfig, vin: str, kinds: set[Kind], workshop: Workshop
    ) -> None:
        self.config = config
        self.workshop = workshop
        self._supported = supported_entries(kinds)
        self._view = VehicleView(vin=vin, supported=self._supported)
        self.link = ScanToolLink(view=lambda: self._view, clear=self.workshop.clear_faults)
        self.uds = UdsServer(self.link)  # one ECU: one diagnostic session for both transports
        # What a transport that cannot start is expected to raise (a CAN bus adds CanError).
        self._expected_errors: tuple[type[Exception], ...] = (OSError,)
        self.transports: list[Transport] = self._transports()
        # name -> where it serves, once it does; name -> why it does not, while it does not.
        self.endpoints: dict[str, str] = {}
        self._problems: dict[str, str] = {}
        # Set once every transport has been tried once (the demo prints where they are then).
        self.started = asyncio.Event()

    def _transports(self) -> list[Transport]:
        config, link, uds = self.config, self.link, self.uds
        transports: list[Transport] = []
        if config.doip:
            transports.append(
                DoipServer(
                    uds.handle,
                    link.view,
                    host=config.doip_host,
                    port=config.doip_port,
                    logical_address=config.logical_address,
                )
            )
        if config.isotp:
            # python-can and can-isotp cost about 12 MB of memory: imported only for a CAN bus.
            import can  # noqa: PLC0415

            from carlightd.outputs.scan_tool.isotp import IsotpServer  # noqa: PLC0415

            self._expected_errors = (OSError, can.CanError)
            transports.append(
                IsotpServer(
                    uds.handle,
                    interface=config.can_interface,
                    channel=config.can_channel,
                    request_id=config.request_id,
                    response_id=config.response_id,
                )
            )
        if config.elm327:
            transports.append(
                Elm327TcpServer(link, host=config.elm327_host, port=config.elm327_port)
            )
        if config.elm327_pty:
            transports.append(Elm327PtyServer(link))
        return transports

    def set_vin(self, vin: str) -> None:
        """A reloaded configuration's VIN, from the next answer on."""
        self._view = dataclasses.replace(self._view, vin=vin)

    def set_kinds(self, kinds: set[Kind]) -> None:
        """The car was replaced: its supported DTCs follow from the next cycle."""
        self._supported = supported_entries(kinds)

    async def deliver(self, report: CycleReport) -> None:
        if self.transports:  # nobody to answer (a fleet's cars): no view to keep
            self._view = view_of(report, self._view.vin, self._supported)

    def problems(self) -> list[str]:
        """What keeps a transport from serving, for ROOT/status."""
        return [f"scan tool {name}: {problem}" for name, problem in self._problems.items()]

    async def run(self, stop: asyncio.Event) -> None:
        tried = 0

        def one_tried() -> None:
            nonlocal tried
            tried += 1
            if tried == len(self.transports):
                self.started.set()

        if not self.transports:
            self.started.set()
        async with asyncio.TaskGroup() as group:
            for transport in self.transports:
                group.create_task(self._serve(transport, stop, one_tried), name=transport.name)

    async def _serve(
        self, transport: Transport, stop: asyncio.Event, tried: Callable[[], None]
    ) -> None:
        first = True
        while not stop.is_set():
            try:
                where = await transport.start()
            except Exception as error:
                # A port in use or a bus that will not open (OSError, CanError) is the expected
                # trouble; anything else is a bug worth its traceback, but no reason to stop.
                expected = isinstance(error, self._expected_errors)
                problem = str(error) or type(error).__name__
                if self._problems.get(transport.name) != problem:
                    log.error(
                        "scan_tool_unavailable",
                        transport=transport.name,
                        problem=problem,
                        retry_s=RETRY_S,
                        exc_info=not expected,
                    )
                self._problems[transport.name] = problem
                if first:
                    first = False
                    tried()
                if await wait_any(stop, timeout_s=RETRY_S):
                    return
                continue
            self.endpoints[transport.name] = where
            if self._problems.pop(transport.name, None) is not None:
                log.info("scan_tool_recovered", transport=transport.name)
            log.info("scan_tool_listening", transport=transport.name, at=where)
            if first:
                tried()
            try:
                await stop.wait()
            finally:
                await transport.close()
                self.endpoints.pop(transport.name, None)
            return
