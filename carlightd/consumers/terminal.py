"""`carlightd watch` on a terminal: a live table of every part, the current faults and the stored
DTCs (the fault memory), with rich,
fed from MQTT like any other consumer. (Not on a terminal, `watch` prints plain lines instead.)

What arrives is hostile data: every payload is validated against the contract's models first
(`carlightd.consumers.received`), and every received string reaches the screen through
`clean()` (control characters made visible) inside a `Text` — never a markup string, so
`[bold]` or `[link=…]` in a payload is shown as typed, not interpreted.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from carlightd.consumers.received import Received, parse, relative
from carlightd.contract.payloads import (
    ComponentPayload,
    DtcPayload,
    DtcsPayload,
    EventPayload,
    FaultsPayload,
    FreezeFramePayload,
    dtc_status_text,
)

STATUS_STYLE = {"ok": "green", "pending": "yellow", "failed": "bold red", "untested": "dim"}
READING_KEYS = ("current_a", "supply_v", "voltage_v", "output_a", "output_v", "ripple_v")
SHOWN_CHARS = 120  # a received string is cut here on screen: a 100 KB name must not fill it
SHOWN_DTCS = 40  # stored DTCs listed; a retained list of thousands must not fill the screen

# What a terminal would act on instead of print: C0 and C1 controls (ESC starts every escape
# sequence), DEL, bidirectional overrides and isolates (which reorder what is shown), line and
# paragraph separators, and lone surrogates (which cannot even be encoded for output).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(value: object, limit: int = SHOWN_CHARS) -> str:
    """A received value as safe terminal text: unsafe characters shown as `\\x1b`, `\\u202e`…
    (so the reader sees that they were there), cut to `limit` characters."""
    text = _UNSAFE.sub(_visible, str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class WatchState:
    """Everything the view shows, folded from the messages as they arrive."""

    root: str
    availability: str = "unknown"
    components: dict[str, ComponentPayload] = field(default_factory=dict)
    faults: FaultsPayload | None = None
    dtcs: DtcsPayload | None = None
    events: deque[EventPayload] = field(default_factory=lambda: deque(maxlen=8))

    def fold(self, topic: str, payload: bytes) -> Received | None:
        """Take in one message; `received.Malformed` (nothing changed) if it breaks the contract.
        Topics the view does not show are ignored (None)."""
        below = relative(self.root, topic)
        received = None if below is None else parse(below, payload)
        if received is None:
            return None
        value = received.value
        if isinstance(value, str):
            self.availability = value
        elif isinstance(value, ComponentPayload):
            self.components[value.component] = value
        elif isinstance(value, FaultsPayload):
            self.faults = value
        elif isinstance(value, DtcsPayload):
            self.dtcs = value
        elif isinstance(value, EventPayload):
            self.events.appendleft(value)
        return received


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 4000-digit integer in a reading
        return None
    return number if math.isfinite(number) else None


def _reading(reading: dict[str, Any] | None) -> str:
    """The two most telling numbers of a reading. The view knows no kind of part: it prefers the
    electrical values every kind so far reports, and shows any other reading (a kind added since)
    by its first numbers, named as received."""
    if not reading:
        return ""
    shown = []
    for key in READING_KEYS:
        number = _number(reading.get(key))
        if number is not None:
            name, unit = key.rsplit("_", 1)
            shown.append(f"{name} {number:.2f} {unit.upper()}")
    if not shown:
        for key, value in reading.items():
            number = _number(value)
            if number is not None:
                shown.append(f"{clean(key, 40)} {number:.2f}")
            if len(shown) == 2:
                break
    return ", ".join(shown[:2])


def event_line(event: EventPayload) -> str:
    fields = (event.type, event.component, event.failure, event.dtc)
    return f"#{event.seq} " + " ".join(clean(value) for value in fields)


def freeze_frame_text(frame: FreezeFramePayload | None) -> str:
    """The conditions when a DTC was confirmed, on one line (received numbers checked first)."""
    if frame is None:
        return "no freeze frame"
    shown = [frame.ignition.value]
    for value, digits, unit in (
        (frame.engine_rpm, 0, "rpm"),
        (frame.bus_v, 2, "V"),
        (frame.battery_soc_percent, 0, "%"),
        (frame.temperature_c, 1, "°C"),
    ):
        number = _number(value)
        if number is not None:
            # A received 1e308 would print 309 digits in fixed notation.
            text = f"{number:.{digits}f}" if abs(number) < 1e6 else f"{number:.3g}"
            shown.append(f"{text} {unit}")
    return f"{' '.join(shown)} at {frame.at.isoformat()[:19]}"


def dtc_line(dtc: DtcPayload) -> str:
    """One stored DTC as a plain line: code, status, part, failure, counters, freeze frame."""
    return (
        f"{clean(dtc.dtc)} {dtc_status_text(dtc.dtc_status)} {clean(dtc.component)} "
        f"{clean(dtc.failure)} occurrences {dtc.occurrences} aging {dtc.aging_counter} "
        f"last {dtc.last_failed.isoformat()[:19]} [{freeze_frame_text(dtc.freeze_frame)}]"
    )


def _cell(value: object) -> Text:
    return Text("" if value is None else clean(value))


def render(state: WatchState) -> Group:
    online = state.availability == "online"
    title = Text.assemble(
        (clean(state.root), "bold"),
        "  ",
        ("● online" if online else f"● {clean(state.availability)}", "green" if online else "red"),
    )
    parts = Table(title=title, expand=True)
    for column in ("part", "kind", "status", "failure", "DTC", "reading / reason"):
        parts.add_column(column)
    for name in sorted(state.components):
        c = state.components[name]
        parts.add_row(
            _cell(name),
            _cell(c.kind),
            Text(clean(c.status), style=STATUS_STYLE.get(c.status, "")),
            _cell(c.failure),
            _cell(c.dtc),
            _cell(c.reason) if c.status == "untested" else Text(_reading(c.reading)),
        )
    lamps = state.faults.warning_lamps.model_dump() if state.faults else {}
    telltales = (
        Text.assemble(
            *[
                (f" {name.replace('_', ' ')} ", "bold white on red" if lit else "dim")
                for name, lit in lamps.items()
            ]
        )
        if lamps
        else Text("no fault list yet", style="dim")
    )
    faults = Table(expand=True, show_edge=False)
    for column in ("DTC", "status", "part", "failure", "since", "consequence of"):
        faults.add_column(column)
    for fault in state.faults.faults if state.faults else []:
        faults.add_row(
            _cell(fault.dtc),
            _cell(fault.status),
            _cell(fault.component),
            _cell(fault.failure),
            Text(fault.since.isoformat()[:19]),
            _cell(fault.consequence_of),
        )
    events = Text("\n".join(event_line(event) for event in state.events) or "none yet")
    return Group(
        parts,
        Panel(Group(telltales, faults), title="warning lamps and faults"),
        Panel(_stored(state.dtcs), title="stored DTCs (fault memory)"),
        Panel(events, title="last events"),
    )


def _stored(memory: DtcsPayload | None) -> Table | Text:
    """The fault memory as a scan tool reads it: kept after a fault heals, until it ages out."""
    if memory is None:
        return Text("no fault memory yet", style="dim")
    if not memory.dtcs:
        return Text("none stored", style="green")
    table = Table(expand=True, show_edge=False)
    for column in ("DTC", "status", "part", "failure", "count", "aging", "freeze frame"):
        table.add_column(column)
    for dtc in memory.dtcs[:SHOWN_DTCS]:
        table.add_row(
            _cell(dtc.dtc),
            Text(dtc_status_text(dtc.dtc_status)),
            _cell(dtc.component),
            _cell(dtc.failure),
            Text(str(dtc.occurrences)),
            Text(str(dtc.aging_counter)),
            Text(freeze_frame_text(dtc.freeze_frame)),
        )
    if len(memory.dtcs) > SHOWN_DTCS:
        table.add_row(Text(f"… and {len(memory.dtcs) - SHOWN_DTCS} more", style="dim"))
    return table


def warning(topic: str, reason: object) -> str:
    """The one line a view prints for a payload it skipped."""
    return f"warning: skipped a malformed payload on {clean(topic)}: {clean(reason, 200)}"
