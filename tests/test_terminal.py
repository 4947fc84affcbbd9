"""The terminal views treat MQTT data as hostile: validation (`carlightd.consumers.received`),
control characters made visible, Rich markup shown as typed. (On a real terminal:
test_terminal_tmux.)"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from carlightd.consumers import client
from carlightd.consumers.received import MAX_PAYLOAD_BYTES, Malformed, Received, parse
from carlightd.consumers.terminal import WatchState, clean, render, warning
from carlightd.contract.payloads import DtcsPayload, EventPayload, FaultsPayload

ROOT = "carlightd/demo-car"
AT = "2025-01-01T00:00:00Z"
MARKUP = "[bold red]x[/] [link=file:///etc/passwd]click[/link] :smile:"
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\u2066"


def component(**fields: Any) -> dict[str, Any]:
    return {
        "component": "brake_left",
        "kind": "lamp",
        "status": "failed",
        "failure": "open_circuit",
        "dtc": "B1200",
        "dtc_status": 9,
        "reason": None,
        "reading": {"current_a": 0.0, "supply_v": 12.6},
        "updated_at": AT,
        **fields,
    }


def fault(**fields: Any) -> dict[str, Any]:
    return {
        "component": "brake_left",
        "kind": "lamp",
        "failure": "open_circuit",
        "dtc": "B1200",
        "status": "confirmed",
        "since": AT,
        "description": "brake lamp left open circuit",
        "consequence_of": None,
        **fields,
    }


def faults(*items: dict[str, Any]) -> dict[str, Any]:
    lamps = {"bulb": True, "battery": False, "check_engine": False}
    return {"vehicle": "demo-car", "updated_at": AT, "warning_lamps": lamps, "faults": list(items)}


def stored(**fields: Any) -> dict[str, Any]:
    frame = {"at": AT, "ignition": "run", "engine_rpm": 812.0, "bus_v": 14.02}
    frame |= {"battery_soc_percent": 81.5, "temperature_c": -3.5}
    return {
        "component": "brake_left",
        "kind": "lamp",
        "failure": "open_circuit",
        "dtc": "B1200",
        "dtc_status": 0x28,  # confirmed, failed since the last clear, not failing now
        "occurrences": 3,
        "aging_counter": 2,
        "first_failed": AT,
        "last_failed": AT,
        "freeze_frame": frame,
        **fields,
    }


def dtcs(*items: dict[str, Any]) -> dict[str, Any]:
    return {"vehicle": "demo-car", "updated_at": AT, "dtcs": list(items)}


def screen(state: WatchState) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system="truecolor").print(render(state))
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\x00b\x7fc\x9bd", "a\\x00b\\x7fc\\x9bd"),
        ("\u202egnp.exe\u202c", "\\u202egnp.exe\\u202c"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
        ("line\nbreak\r\ttab\u2028", "line\\x0abreak\\x0d\\x09tab\\u2028"),
        ("\ud800", "\\ud800"),
        ("héllo 車 🚗 [b]", "héllo 車 🚗 [b]"),  # ordinary text is left alone, markup too
    ],
)
def test_clean_makes_controls_visible(raw: str, shown: str) -> None:
    assert clean(raw) == shown


def test_clean_cuts_huge_strings() -> None:
    cut = clean("x" * 100_000)
    assert len(cut) == 120
    assert cut.endswith("…")


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        ("faults", b"not json", "Invalid JSON"),
        ("faults", b"", "Invalid JSON"),
        ("faults", b"\xff\xfe", "Invalid JSON"),
        ("faults", b"[1, 2]", "Input should be an object"),
        ("faults", b"[" * 10_000 + b"]" * 10_000, "recursion limit"),
        ("faults", json.dumps(faults(fault(status="<b>"))).encode(), "faults.0.status"),
        ("faults", json.dumps(faults(fault(dtc=["B1200"]))).encode(), "faults.0.dtc"),
        ("faults", json.dumps({**faults(), "<img src=x>": 1}).encode(), "<img src=x>: Extra"),
        ("events", b'{"seq": "1; DROP"}', "seq"),
        ("events", b'{"seq": 1' + b"0" * 5000 + b"}", "Invalid JSON"),
        ("telemetry", b"null", "Input should be an object"),
        ("dtcs", b"[[[[", "Invalid JSON"),
        ("dtcs", json.dumps(dtcs(stored(dtc_status=256))).encode(), "dtcs.0.dtc_status"),
        ("dtcs", json.dumps(dtcs(stored(occurrences=-1))).encode(), "dtcs.0.occurrences"),
        ("dtcs", json.dumps(dtcs(stored(occurrences=2**60))).encode(), "dtcs.0.occurrences"),
        ("dtcs", json.dumps(dtcs(stored(freeze_frame={"at": AT}))).encode(), "freeze_frame"),
        ("dtcs", json.dumps({**dtcs(), "<img src=x>": 1}).encode(), "<img src=x>: Extra"),
        ("availability", b"<script>alert(1)</script>", "availability must be"),
        ("components/brake_left", json.dumps(component(component="tail_left")).encode(), "topic"),
        ("components/brake_left", b"x" * (MAX_PAYLOAD_BYTES + 1), "over the"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(Malformed) as refused:
        parse(topic, payload)
    assert why in str(refused.value)
    assert len(str(refused.value)) < 300  # one line, never the payload at length
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "topic", ["status", "request/repair", "response/repair", "components/a/b", "new/thing"]
)
def test_topics_the_views_do_not_show_are_ignored(topic: str) -> None:
    assert parse(topic, b"\x00 anything at all") is None


def test_hostile_strings_reach_the_table_as_typed() -> None:
    state = WatchState(ROOT)
    name = "[bold red]x[red]"
    state.fold(
        f"{ROOT}/components/{name}",
        json.dumps(
            component(component=name, failure=MARKUP, dtc=ESCAPES, reading={"current_a": 10**400})
        ).encode(),
    )
    state.fold(f"{ROOT}/faults", json.dumps(faults(fault(component=MARKUP))).encode())
    event = {"seq": 7, "type": "fault_confirmed", "component": ESCAPES, "kind": "lamp"}
    event |= {"failure": MARKUP, "dtc": "B1200", "at": AT}
    state.fold(f"{ROOT}/events", json.dumps(event).encode())
    state.fold(f"{ROOT}/availability", b"online")
    shown = screen(state)
    assert "[bold red]x[red]" in shown
    assert "[link=file:///etc/passwd]click[/link]" in shown
    assert ":smile:" in shown  # not turned into an emoji either
    assert "\\x1b]0;pwned\\x07" in shown
    assert "\\u202eevil" in shown
    # Rich's own colours are CSI SGR sequences; nothing else may reach the terminal.
    assert "\x1b]" not in shown  # no OSC: no title change, no hyperlink (OSC 8)
    assert "\x1b[2J" not in shown
    assert "\x9b" not in shown
    assert "\u202e" not in shown


def test_a_malformed_payload_changes_nothing() -> None:
    state = WatchState(ROOT)
    good = json.dumps(faults(fault())).encode()
    state.fold(f"{ROOT}/faults", good)
    for bad in (b"{", json.dumps(faults(fault(status="gone"))).encode()):
        with pytest.raises(Malformed):
            state.fold(f"{ROOT}/faults", bad)
    assert state.faults is not None
    assert state.faults.faults[0].status == "confirmed"
    assert state.fold(f"{ROOT}/status", b'{"whatever": 1}') is None
    assert state.fold("elsewhere/faults", good) is None


def test_warning_line_is_one_clean_line() -> None:
    line = warning(f"{ROOT}/components/\x1b[2J", "bad\nthing " + "y" * 1000)
    assert line.startswith("warning: skipped a malformed payload on carlightd/demo-car/")
    assert "\n" not in line
    assert "\x1b" not in line
    assert len(line) < 400


def test_fault_list_and_plain_lines_are_clean() -> None:
    payload = FaultsPayload.model_validate(
        faults(fault(component=ESCAPES, failure=MARKUP, consequence_of="\x1b[2J"))
    )
    text = client.format_faults(payload, "online\x1b[2J")
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert MARKUP in text
    as_json = client.faults_json(payload)
    assert as_json.isascii()  # C1 controls and bidi overrides escaped as \uXXXX
    assert json.loads(as_json)["faults"][0]["component"] == ESCAPES  # the same data, exactly
    event = EventPayload(
        seq=1,
        type="fault_pending",
        component=ESCAPES,
        kind="lamp",
        failure=MARKUP,
        dtc="B1",
        at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    for value in (event, payload):
        line = client.plain_line(Received("events", value))
        assert line is not None
        assert "\x1b" not in line
        assert "\\x1b]0;pwned\\x07" in line


def test_stored_dtcs_are_shown_apart_from_the_faults_with_their_freeze_frame() -> None:
    state = WatchState(ROOT)
    assert "no fault memory yet" in screen(state)
    state.fold(f"{ROOT}/faults", json.dumps(faults()).encode())
    state.fold(f"{ROOT}/dtcs", json.dumps(dtcs()).encode())
    assert "none stored" in screen(state)
    # The fault healed (no active fault) and its DTC stays stored.
    state.fold(f"{ROOT}/dtcs", json.dumps(dtcs(stored())).encode())
    shown = screen(state)
    memory = shown[shown.index("stored DTCs") :]
    assert "B1200" in memory
    assert "0x28 confirmed" in memory
    assert "brake_left" in memory
    assert "run 812 rpm 14.02 V 82 % -3.5 °C at 2025-01-01T00:00:00" in memory
    faults_panel = shown[shown.index("warning lamps and faults") : shown.index("stored DTCs")]
    assert "B1200" not in faults_panel  # not an active fault


def test_hostile_stored_dtcs_reach_the_table_as_typed_and_a_flood_is_cut() -> None:
    state = WatchState(ROOT)
    frame = {"at": AT, "ignition": "on", "engine_rpm": None, "bus_v": float("nan")}
    frame |= {"battery_soc_percent": float("inf"), "temperature_c": 1e308}
    hostile = stored(component=ESCAPES, failure=MARKUP, dtc="[link=x]B1[/link]", freeze_frame=frame)
    # json.dumps writes NaN and Infinity, as a hostile publisher may.
    state.fold(f"{ROOT}/dtcs", json.dumps(dtcs(hostile)).encode())
    shown = screen(state)
    assert "[bold red]x[/]" in shown  # (the cell wraps MARKUP at its spaces)
    assert "[link=file:///etc/passwd]click[/link]" in shown
    assert "[link=x]B1[/link]" in shown
    assert "on 1e+308 °C at 2025-01-01T00:00:00" in shown  # not 309 digits; NaN, inf left out
    assert "\\x1b]0;pwned\\x07" in shown
    assert "\x1b]" not in shown
    assert "\u202e" not in shown
    assert "nan" not in shown.lower()
    assert "inf " not in shown.lower()
    # As many as fit under the consumers' size limit: far more than a screen holds.
    flood = [stored(component=f"part{i:05d}", freeze_frame=None) for i in range(700)]
    state.fold(f"{ROOT}/dtcs", json.dumps(dtcs(*flood)).encode())
    shown = screen(state)
    assert "part00039" in shown
    assert "part00040" not in shown
    assert "… and 660 more" in shown
    line = client.plain_line(Received("dtcs", DtcsPayload.model_validate(dtcs(*flood))))
    assert line is not None
    assert line.startswith("stored DTCs: 700\n")
    assert line.count("\n") == 41  # 40 listed, then how many more
    assert line.endswith("… and 660 more")


def test_plain_stored_dtc_lines_are_clean() -> None:
    value = DtcsPayload.model_validate(dtcs(stored(component=ESCAPES, failure=MARKUP)))
    line = client.plain_line(Received("dtcs", value))
    assert line is not None
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert line == (
        "stored DTCs: 1\n"
        f"  B1200 0x28 confirmed {clean(ESCAPES)} {MARKUP} occurrences 3 aging 2 "
        "last 2025-01-01T00:00:00 [run 812 rpm 14.02 V 82 % -3.5 °C at 2025-01-01T00:00:00]"
    )
    empty = client.plain_line(Received("dtcs", DtcsPayload.model_validate(dtcs())))
    assert empty == "stored DTCs: none"
