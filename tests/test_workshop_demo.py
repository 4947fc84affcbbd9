"""The README's "For the workshop", as a user follows it: `carlightd demo` prints where its
scan-tool interfaces listen, and the README's two example scripts (in docs/examples/, included
verbatim in the README) read the demo car's DTCs, freeze frames and voltage with udsoncan and
python-OBD."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carlightd.config import ScanToolConfig, Settings
from carlightd.tools.demo import demo_scan_tool, scan_tool_instructions
from tests.brokers import free_port
from tests.simulate import settings as make_settings

pytestmark = pytest.mark.scan_tool

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def test_the_readme_shows_the_examples_as_they_are() -> None:
    readme = (ROOT / "README.md").read_text()
    for example in ("uds_over_doip.py", "obd_over_elm327.py"):
        assert (EXAMPLES / example).read_text() in readme, example


def read_until(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> re.Match[str]:
    """Lines of the demo's output until one matches (the demo prints, then keeps running)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in: {''.join(seen)}")


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_serves_the_workshop_and_the_readme_examples_read_it(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = broker
    env = {
        "PATH": "/usr/bin:/bin",
        "CARLIGHTD_MQTT__HOST": host,
        "CARLIGHTD_MQTT__PORT": str(port),
        "CARLIGHTD_MQTT__BASE_TOPIC": f"workshop-demo-{free_port()}",
        "CARLIGHTD_SCAN_TOOL__DOIP_PORT": str(free_port()),
        "CARLIGHTD_SCAN_TOOL__ELM327_PORT": str(free_port()),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "carlightd", "demo", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as proc:
        try:
            doip = read_until(proc, r"UDS over DoIP: 127\.0\.0\.1:(\d+)", 30)
            elm327 = read_until(proc, r"ELM327 on TCP: 127\.0\.0\.1:(\d+)", 5)
            pty = read_until(proc, r"ELM327 on a serial port: (/dev/pts/\d+)", 5)
            assert Path(pty[1]).exists()
            # The demo's script breaks a brake lamp first: pending at once, confirmed (with its
            # freeze frame) after three 1 s cycles.
            deadline = time.monotonic() + 30
            while "occurrences 1" not in (uds := run_example("uds_over_doip.py", doip[1])):
                assert time.monotonic() < deadline, uds
                time.sleep(0.5)
            assert "VIN CLDSMLT12V0000043" in uds
            assert re.search(r"bus 1\d\.\d\d V, battery \d+ %, engine \d+ rpm", uds), uds
            assert re.search(r"freeze frame at \d\d:\d\d:\d\d: bus 1\d\.\d\d V", uds), uds
            assert "occurrences 1, aging counter 0" in uds
            obd = run_example("obd_over_elm327.py", elm327[1])
            assert "Car Connected protocol ISO 15765-4 (CAN 11/500)" in obd, obd
            assert "CLDSMLT12V0000043" in obd
            assert re.search(r"engine speed \d+(\.\d+)? revolutions_per_minute", obd), obd
            assert re.search(r"control module voltage 1\d\.\d+ volt", obd), obd
            # A brake lamp is a body code: no check-engine lamp, nothing in mode 03.
            assert "check-engine lamp off with 0 codes" in obd, obd
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            proc.kill()


def test_the_demo_takes_free_ports_where_the_usual_ones_are_taken() -> None:
    # Another daemon on the usual ports (as for the dashboard): the demo takes any free one and
    # prints it; a free usual port is kept.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        usual = ScanToolConfig(doip_port=busy, elm327_port=free_port())
        chosen = demo_scan_tool(usual)
    assert (chosen.doip_port, chosen.elm327_port) == (0, usual.elm327_port)
    assert chosen.elm327_pty is True


def test_the_demo_says_which_interface_could_not_start() -> None:
    settings = Settings(components=make_settings().components)
    text = scan_tool_instructions(
        settings,
        {"elm327": "127.0.0.1:35000"},
        ["scan tool doip: [Errno 98] address already in use"],
    )
    assert "OBD-II, ELM327 on TCP: 127.0.0.1:35000" in text
    assert "scan tool doip: [Errno 98] address already in use (tried again" in text
    assert "UDS over DoIP" not in text
