"""`carlightd watch` and `carlightd faults` on a real terminal (tmux), fed hostile retained
payloads: Rich markup and escape sequences are shown as typed (the terminal never acts on them: its
title stays, its screen is not cleared), a malformed payload is one warning line and never a
traceback, and the view still shows the valid data that comes after.

Each test runs its own tmux server on a private socket (`tmux -L`) and kills only its session."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.brokers import unique_base_topic

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (apt-get install tmux)")

AT = "2025-01-01T00:00:00+00:00"
MARKUP = "[bold red]x[/]"
LINK = "[link=file:///etc/passwd]"
TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the terminal's title
CLEAR = "\x1b[2J"  # CSI 2 J: clear the screen
C1_CLEAR = "\x9b2J"  # the same with the 8-bit CSI
BIDI = "\u202eevil"  # right-to-left override


def shown(text: str) -> str:
    """How `carlightd.consumers.terminal.clean` shows a string with control characters."""
    return (
        text.replace("\x1b", "\\x1b")
        .replace("\x07", "\\x07")
        .replace("\x9b", "\\x9b")
        .replace("\u202e", "\\u202e")
    )


class Tmux:
    """One detached tmux session, 200 by 50, on a tmux server of the test's own."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        assert TMUX is not None
        self.socket = f"carlightd-test-{uuid.uuid4().hex[:8]}"
        self.session = "view"
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        # The pane outlives the command, and says how it ended.
        # Without COLUMNS and LINES (a stale copy may be in the environment): the size that
        # counts is the terminal's own, as for a user.
        script = f"env -u COLUMNS -u LINES {exports} {command}; echo EXITED $?; sleep 600"
        self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "50", script)

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", self.session)

    def title(self) -> str:
        return self.tmux("display-message", "-p", "-t", self.session, "#{pane_title}").strip()

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the pane shows:\n{screen}")
            time.sleep(0.1)

    def kill(self) -> None:
        # Only our session; our private server exits with its last session.
        kill = [TMUX or "tmux", "-L", self.socket, "kill-session", "-t", self.session]
        subprocess.run(kill, check=False, capture_output=True)


class Terminal:
    """`carlightd ARGS` in tmux panes against the test broker, on a fresh ROOT."""

    def __init__(self, broker: tuple[str, int]) -> None:
        self.broker = broker
        base = unique_base_topic()
        self.root = f"{base}/demo-car"
        self.env = {
            "CARLIGHTD_MQTT__HOST": broker[0],
            "CARLIGHTD_MQTT__PORT": str(broker[1]),
            "CARLIGHTD_MQTT__BASE_TOPIC": base,
            "PYTHONPATH": str(Path(__file__).parents[1]),  # this checkout's carlightd
        }
        self.started: list[Tmux] = []

    def start(self, args: str) -> Tmux:
        tmux = Tmux(f"{shlex.quote(sys.executable)} -m carlightd {args}", self.env)
        self.started.append(tmux)
        return tmux

    def publish(self, messages: dict[str, bytes], *, retain: bool) -> None:
        """Publish under ROOT (topics relative to it), as anybody on the broker can."""
        full = {f"{self.root}/{topic}": payload for topic, payload in messages.items()}
        asyncio.run(publish_async(self.broker, full, retain=retain))


@pytest.fixture
def terminal(broker: tuple[str, int]) -> Iterator[Terminal]:
    term = Terminal(broker)
    yield term
    for tmux in term.started:
        tmux.kill()
    asyncio.run(clear_retained(broker, term.root))


PUBLISHED: set[str] = set()


async def publish_async(
    broker: tuple[str, int], messages: dict[str, bytes], *, retain: bool
) -> None:
    async with aiomqtt.Client(*broker, identifier=f"test-pub-{uuid.uuid4().hex[:8]}") as client:
        for topic, payload in messages.items():
            await client.publish(topic, payload, qos=1, retain=retain)
            if retain:
                PUBLISHED.add(topic)


async def clear_retained(broker: tuple[str, int], root: str) -> None:
    mine = {topic: b"" for topic in set(PUBLISHED) if topic.startswith(f"{root}/")}
    await publish_async(broker, mine, retain=True)


def component(part: str, **fields: Any) -> bytes:
    return json.dumps(
        {
            "component": part,
            "kind": "lamp",
            "status": "failed",
            "failure": "open_circuit",
            "dtc": "B1200",
            "dtc_status": 9,
            "reason": None,
            "reading": {"current_a": 0.0},
            "updated_at": AT,
            **fields,
        }
    ).encode()


def fault_list(**fields: Any) -> bytes:
    fault = {
        "component": "brake_left",
        "kind": "lamp",
        "failure": MARKUP,
        "dtc": "B1200",
        "status": "confirmed",
        "since": AT,
        "description": TITLE,
        "consequence_of": None,
        **fields,
    }
    lamps = {"bulb": True, "battery": False, "check_engine": False}
    return json.dumps(
        {"vehicle": "demo-car", "updated_at": AT, "warning_lamps": lamps, "faults": [fault]}
    ).encode()


def stored_dtcs(**fields: Any) -> bytes:
    frame = {"at": AT, "ignition": "run", "engine_rpm": 812.0, "bus_v": 14.02}
    frame |= {"battery_soc_percent": 81.5, "temperature_c": -3.5}
    dtc = {
        "component": "brake_left",
        "kind": "lamp",
        "failure": "open_circuit",
        "dtc": "B1200",
        "dtc_status": 0x28,
        "occurrences": 3,
        "aging_counter": 2,
        "first_failed": AT,
        "last_failed": AT,
        "freeze_frame": frame,
        **fields,
    }
    return json.dumps({"vehicle": "demo-car", "updated_at": AT, "dtcs": [dtc]}).encode()


def event(seq: int, **fields: Any) -> bytes:
    values = {"seq": seq, "type": "fault_confirmed", "component": "brake_left", "kind": "lamp"}
    values |= {"failure": "open_circuit", "dtc": "B1200", "at": AT}
    return json.dumps({**values, **fields}).encode()


def test_live_table_shows_hostile_text_as_typed_and_goes_on(terminal: Terminal) -> None:
    root = terminal.root
    terminal.publish(
        {
            "availability": b"online",
            "components/brake_left": component("brake_left", failure=MARKUP, dtc=LINK, kind=TITLE),
            "components/brake_right": component(
                "brake_right", failure=BIDI, dtc=CLEAR, kind=C1_CLEAR
            ),
            "components/tail_right": b"{not json",
            "components/tail_left": b'{"reading": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "faults": fault_list(component=CLEAR + "brake_left"),
            "dtcs": stored_dtcs(component="dtc" + TITLE, dtc="[blink]P1[/blink]"),
            "status": b"\x1b]0;status\x07 not for this view",
        },
        retain=True,
    )
    tmux = terminal.start("watch")
    before = tmux.title()
    literals: tuple[str, ...] = (
        MARKUP,
        LINK,
        shown(TITLE),
        shown(BIDI),
        shown(CLEAR),
        shown(C1_CLEAR),
    )
    literals += ("stored DTCs", "dtc" + shown(TITLE), "[blink]P1[/blink]", "0x28 confirmed")
    screen = tmux.wait_for(
        lambda s: all(literal in s for literal in literals) and s.count("warning:") == 2,
        "the hostile text, as typed, and two warnings",
    )
    assert f"warning: skipped a malformed payload on {root}/components/tail_right: " in screen
    assert f"warning: skipped a malformed payload on {root}/components/tail_left: " in screen
    assert "recursion limit exceeded" in screen
    assert "not for this view" not in screen  # ROOT/status: not this view's topic, ignored
    assert "Traceback" not in screen
    assert "pwned" not in tmux.title()  # the OSC title sequence never reached the terminal
    assert tmux.title() == before

    # Valid data after the bad data: the view goes on.
    terminal.publish({"components/brake_left": component("brake_left")}, retain=True)
    terminal.publish({"events": event(41, component=MARKUP)}, retain=False)
    screen = tmux.wait_for(lambda s: "#41 fault_confirmed" in s, "the later event")
    assert f"#41 fault_confirmed {MARKUP} open_circuit B1200" in screen
    assert LINK not in screen  # brake_left's DTC is B1200 again
    # A malformed fault memory is one warning; the view keeps what it showed.
    terminal.publish({"dtcs": b'{"dtcs": [{"dtc_status": 4096}]}'}, retain=True)
    screen = tmux.wait_for(lambda s: f"{root}/dtcs: " in s, "the warning about ROOT/dtcs")
    assert f"warning: skipped a malformed payload on {root}/dtcs: " in screen
    assert "[blink]P1[/blink]" in screen
    terminal.publish({"events": b'{"seq": "forty-two"}'}, retain=False)
    terminal.publish({"events": event(43)}, retain=False)
    screen = tmux.wait_for(lambda s: "#43 fault_confirmed" in s, "the event after a bad one")
    assert f"warning: skipped a malformed payload on {root}/events: seq: " in screen
    assert "Traceback" not in screen

    tmux.tmux("send-keys", "-t", tmux.session, "C-c")
    screen = tmux.wait_for(lambda s: "EXITED" in s, "Ctrl-C to stop the view")
    assert "EXITED 0" in screen
    assert "Traceback" not in screen


def test_plain_watch_lines_are_clean(terminal: Terminal) -> None:
    root = terminal.root
    terminal.publish(
        {
            "faults": fault_list(component=BIDI),
            "availability": TITLE.encode(),
            "dtcs": stored_dtcs(failure=CLEAR + MARKUP),
        },
        retain=True,
    )
    tmux = terminal.start("watch | cat")  # piped: plain lines; warnings on the terminal (stderr)
    before = tmux.title()
    screen = tmux.wait_for(
        lambda s: "faults: " in s and "availability" in s and "stored DTCs: " in s,
        "faults, stored DTCs, warning",
    )
    assert "stored DTCs: 1" in screen
    assert (
        f"  B1200 0x28 confirmed brake_left {shown(CLEAR)}{MARKUP} occurrences 3 aging 2 "
        "last 2025-01-01T00:00:00 [run 812 rpm 14.02 V 82 % -3.5 °C at 2025-01-01T00:00:00]"
    ) in screen
    assert f"faults: {shown(BIDI)}:{MARKUP}" in screen
    assert f"warning: skipped a malformed payload on {root}/availability: " in screen
    assert "\\x1b]0;pwned\\x07" in screen
    terminal.publish({"events": b"\x1b[2J{"}, retain=False)
    terminal.publish({"events": event(7, failure=CLEAR + LINK)}, retain=False)
    terminal.publish({"availability": b"online"}, retain=True)
    screen = tmux.wait_for(lambda s: "daemon online" in s, "the later valid messages")
    assert f"#7     fault_confirmed  brake_left {shown(CLEAR)}{LINK} B1200" in screen
    assert f"warning: skipped a malformed payload on {root}/events: payload: Invalid JSON" in screen
    assert "watching " in screen  # the first line is still there: the screen was never cleared
    assert "Traceback" not in screen
    assert tmux.title() == before


def test_faults_shows_hostile_text_as_typed_and_refuses_a_malformed_list(
    terminal: Terminal,
) -> None:
    root = terminal.root
    hostile = fault_list(component=TITLE, consequence_of=CLEAR + C1_CLEAR, dtc=LINK)
    terminal.publish({"faults": hostile, "availability": b"online"}, retain=True)
    tmux = terminal.start("faults")
    before = tmux.title()
    screen = tmux.wait_for(lambda s: "EXITED" in s, "faults to finish")
    assert "EXITED 0" in screen, screen
    assert f"{LINK}  confirmed  {shown(TITLE)}" in screen
    assert MARKUP in screen
    assert f"(consequence of {shown(CLEAR + C1_CLEAR)})" in screen
    assert "Traceback" not in screen
    assert tmux.title() == before

    as_json = terminal.start("faults --json")
    screen = as_json.wait_for(lambda s: "EXITED" in s, "faults --json to finish")
    assert "EXITED 0" in screen
    assert '"component": "\\u001b]0;pwned\\u0007"' in screen  # JSON escapes, not the bytes
    assert '"consequence_of": "\\u001b[2J\\u009b2J"' in screen

    terminal.publish({"faults": b'{"faults": [' + b"[" * 3000}, retain=True)
    broken = terminal.start("faults")
    screen = broken.wait_for(lambda s: "EXITED" in s, "faults to refuse the list")
    assert "EXITED 1" in screen
    refused = f"carlightd: the fault list on {root}/faults is malformed, so it is not shown: "
    assert refused in screen
    assert "Traceback" not in screen
