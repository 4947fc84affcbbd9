"""`carlightd demo`: the daemon with a lively car that breaks and mends parts on a script, on the
configured broker if one listens there, else on an embedded one, for a newcomer with nothing set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from carlightd import logs
from carlightd.app.daemon import Service
from carlightd.config import ScanToolConfig, Settings
from carlightd.consumers.dashboard.server import serving
from carlightd.core.domain import Ignition
from carlightd.runtime import signals
from carlightd.runtime.waiting import wait_any
from carlightd.tools.embedded_broker import embedded_broker

log = logs.get("carlightd.demo")

# (part, failure): broken for BROKEN_S, then repaired, then REST_S of health; round and round.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("brake_left", "open_circuit"),
    ("alternator", "no_output"),
    ("headlamp_right", "degraded"),
    ("bcm", "no_response"),
    ("battery", "weak"),
    ("turn_rear_left", "short_circuit"),
    ("battery", "sensor_fault"),
    ("tail_right", "open_circuit"),
)
BROKEN_S = 20.0
DASHBOARD_PORT = 8080
REST_S = 10.0


def broker_listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


@contextlib.asynccontextmanager
async def a_broker(settings: Settings, out: TextIO) -> AsyncIterator[None]:
    host, port = settings.mqtt.host, settings.mqtt.port
    if broker_listening(host, port):
        print(f"using the MQTT broker at {host}:{port}", file=out)
        yield
        return
    print(f"no broker at {host}:{port}; starting an embedded one there (amqtt)", file=out)
    async with embedded_broker(host, port):
        yield


async def run_script(service: Service, stop: asyncio.Event) -> None:
    car = service.daemon.car
    for part, failure in itertools.cycle(SCRIPT):
        if part not in car.parts:
            continue
        log.info("demo_break", component=part, failure=failure)
        car.inject(part, failure)
        if await wait_any(stop, timeout_s=BROKEN_S):
            return
        log.info("demo_repair", component=part)
        car.repair(part)
        if await wait_any(stop, timeout_s=REST_S):
            return


def demo_settings(settings: Settings, state_dir: Path) -> Settings:
    return settings.model_copy(
        update={
            "vehicle": settings.vehicle.model_copy(update={"ignition": Ignition.RUN}),
            "simulation": settings.simulation.model_copy(update={"profile": "drive"}),
            "diagnostics": settings.diagnostics.model_copy(update={"state_dir": state_dir}),
            "scan_tool": demo_scan_tool(settings.scan_tool),
        }
    )


def demo_scan_tool(scan_tool: ScanToolConfig) -> ScanToolConfig:
    """The ELM327 on a pseudo-terminal too, for apps and tools that want a serial port; and, as
    for the dashboard, any free port where the usual one is taken (another daemon, say)."""
    update: dict[str, object] = {"elm327_pty": True}
    for host, key in (("doip_host", "doip_port"), ("elm327_host", "elm327_port")):
        port = getattr(scan_tool, key)
        if port and not _port_free(port, getattr(scan_tool, host)):
            update[key] = 0
    return scan_tool.model_copy(update=update)


def scan_tool_instructions(
    settings: Settings, endpoints: Mapping[str, str], problems: Sequence[str]
) -> str:
    """Where the workshop's tools reach the car (only the interfaces that did start)."""
    lines = ['For the workshop (see the README, "For the workshop"):']
    if "doip" in endpoints:
        host, _, port = endpoints["doip"].rpartition(":")
        address = settings.scan_tool.logical_address
        lines += [
            f"  UDS over DoIP: {endpoints['doip']}, ECU logical address {address:#06x}",
            f"    DoIPClient({host!r}, {address:#06x}, tcp_port={port}) with udsoncan",
        ]
    if "isotp" in endpoints:
        lines.append(f"  UDS over ISO-TP: {endpoints['isotp']}")
    if "elm327" in endpoints:
        lines += [
            f"  OBD-II, ELM327 on TCP: {endpoints['elm327']}",
            f'    obd.OBD("socket://{endpoints["elm327"]}")  (python-OBD), or a Wi-Fi OBD app',
        ]
    if "elm327_pty" in endpoints:
        lines.append(f"  OBD-II, ELM327 on a serial port: {endpoints['elm327_pty']}")
    lines += [f"  {problem} (tried again every few seconds)" for problem in problems]
    if len(lines) == 1:
        lines.append("  (the scan-tool interfaces are off: [scan_tool] in the configuration)")
    return "\n".join(lines)


async def print_scan_tool_instructions(service: Service, out: TextIO) -> None:
    await service.scan_tool.started.wait()
    scan_tool = service.scan_tool
    instructions = scan_tool_instructions(
        service.settings, scan_tool.endpoints, scan_tool.problems()
    )
    print(instructions, file=out, flush=True)


def instructions(settings: Settings) -> str:
    mqtt = settings.mqtt
    root = f"{mqtt.base_topic}/{settings.vehicle.id}"
    return "\n".join(
        [
            f"carlightd demo: vehicle {settings.vehicle.id!r} publishing under {root}/",
            "A script breaks a part every 30 s and repairs it 20 s later. In another terminal:",
            f"  mosquitto_sub -h {mqtt.host} -p {mqtt.port} -v -t '{root}/#'",
            "  .venv/bin/carlightd watch         # faults and events as they happen",
            "  .venv/bin/carlightd faults        # the current fault list",
            "  .venv/bin/carlightd inject tail_left open_circuit",
            "  .venv/bin/carlightd repair tail_left",
            "Ctrl-C stops the demo.",
        ]
    )


@contextlib.asynccontextmanager
async def a_dashboard(settings: Settings) -> AsyncIterator[str]:
    """The dashboard on its usual port, or on any free one if that is taken."""
    port = DASHBOARD_PORT if _port_free(DASHBOARD_PORT) else 0
    async with serving(settings, "127.0.0.1", port) as (host, bound):
        yield f"http://{host}:{bound}/"


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def demo(settings: Settings, out: TextIO) -> None:
    with tempfile.TemporaryDirectory(prefix="carlightd-demo-") as state_dir:
        settings = demo_settings(settings, Path(state_dir))
        logs.bind_vehicle(settings.vehicle.id)  # one car: every line of the demo names it
        async with a_broker(settings, out), a_dashboard(settings) as url:
            service = Service(settings)
            print(f"Dashboard: {url}  (open it in a browser)", file=out)
            print(instructions(settings), file=out, flush=True)
            with signals.stopping(service.stop.set):
                async with asyncio.TaskGroup() as group:
                    group.create_task(service.run(), name="service")
                    group.create_task(run_script(service, service.stop), name="demo-script")
                    group.create_task(
                        print_scan_tool_instructions(service, out), name="demo-scan-tool"
                    )
