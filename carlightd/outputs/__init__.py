"""Outputs: where each cycle's report goes (MQTT today; the scan-tool face next).

The loop hands every report to every output, each in its own guard: one output that fails never
stops the cycle or the others. `deliver` never waits for the network: an output records what it
must say and says it from its own task (`run`), which the app starts and stops with the loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from carlightd.core.diagnoser import CycleReport


class Output(Protocol):
    async def deliver(self, report: CycleReport) -> None:
        """Take this cycle's report; return at once."""
        ...


class ConnectedOutput(Output, Protocol):
    """An output with a life of its own (a connection to keep, a server to serve)."""

    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; a clean stop returns, anything else raises."""
        ...
