"""`carlightd watch` on a terminal: a live table of every part and the current faults, with rich,
fed from MQTT like any other consumer. (Not on a terminal, `watch` prints plain lines instead.)"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"ok": "green", "pending": "yellow", "failed": "bold red", "untested": "dim"}
READING_KEYS = ("current_a", "supply_v", "voltage_v", "output_a", "output_v", "ripple_v")


@dataclass
class WatchState:
    """Everything the view shows, folded from the messages as they arrive."""

    root: str
    availability: str = "unknown"
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Any] | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))

    def fold(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.root}/availability":
            self.availability = payload.decode(errors="replace")
            return
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if topic.startswith(f"{self.root}/components/"):
            self.components[topic.rsplit("/", 1)[1]] = data
        elif topic == f"{self.root}/faults":
            self.faults = data
        elif topic == f"{self.root}/events":
            self.events.appendleft(data)


def _reading(reading: dict[str, Any] | None) -> str:
    if not reading:
        return ""
    shown = [
        f"{key.rsplit('_', 1)[0]} {reading[key]:.2f} {key.rsplit('_', 1)[1].upper()}"
        for key in READING_KEYS
        if isinstance(reading.get(key), int | float)
    ]
    return ", ".join(shown[:2])


def _event_line(event: dict[str, Any]) -> str:
    fields = (event.get(key) for key in ("type", "component", "failure", "dtc"))
    return f"#{event.get('seq')} " + " ".join(str(value) for value in fields)


def render(state: WatchState) -> Group:
    online = state.availability == "online"
    title = Text.assemble(
        (state.root, "bold"),
        "  ",
        ("● online" if online else f"● {state.availability}", "green" if online else "red"),
    )
    parts = Table(title=title, expand=True)
    for column in ("part", "kind", "status", "failure", "DTC", "reading / reason"):
        parts.add_column(column)
    for name in sorted(state.components):
        c = state.components[name]
        status = str(c.get("status", "?"))
        parts.add_row(
            name,
            str(c.get("kind", "")),
            Text(status, style=STATUS_STYLE.get(status, "")),
            c.get("failure") or "",
            c.get("dtc") or "",
            c.get("reason") if status == "untested" else _reading(c.get("reading")),
        )
    lamps = (state.faults or {}).get("warning_lamps", {})
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
    for fault in (state.faults or {}).get("faults", []):
        faults.add_row(
            fault["dtc"],
            fault["status"],
            fault["component"],
            fault["failure"],
            str(fault["since"])[:19],
            fault.get("consequence_of") or "",
        )
    events = "\n".join(_event_line(event) for event in state.events) or "none yet"
    return Group(
        parts,
        Panel(Group(telltales, faults), title="warning lamps and faults"),
        Panel(events, title="last events"),
    )
