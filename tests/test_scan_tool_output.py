"""The scan-tool output's supervision of its transports: one that cannot start is a problem it
reports and retries, whatever it raises; the others serve; a clean stop closes what serves."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from carlightd.config import ScanToolConfig
from carlightd.core.domain import Ignition, Kind
from carlightd.outputs.scan_tool import output
from carlightd.outputs.scan_tool.output import ScanToolOutput


class NoCar:
    """A workshop the supervision never calls."""

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        raise AssertionError("not used")

    def repair(self, part_id: str) -> None:
        raise AssertionError("not used")

    def set_ignition(self, ignition: Ignition) -> None:
        raise AssertionError("not used")

    async def clear_faults(self) -> int:
        raise AssertionError("not used")


class Flaky:
    """Fails to start `failures` times (with `error`), then serves."""

    def __init__(self, name: str, error: Exception, failures: int) -> None:
        self.name, self.error, self.failures = name, error, failures
        self.starts = self.closes = 0

    async def start(self) -> str:
        self.starts += 1
        if self.starts <= self.failures:
            raise self.error
        return f"{self.name}-endpoint"

    async def close(self) -> None:
        self.closes += 1


@pytest.mark.parametrize(
    "error",
    [OSError(98, "Address already in use"), RuntimeError("a bug in a transport")],
    ids=["expected", "unexpected"],
)
async def test_a_transport_that_cannot_start_is_retried_and_never_stops_the_others(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "RETRY_S", 0.05)
    scan_tool = ScanToolOutput(
        ScanToolConfig(doip=False, elm327=False), "CLDSMLT12V0000043", {Kind.LAMP}, NoCar()
    )
    flaky, steady = Flaky("flaky", error, failures=3), Flaky("steady", error, failures=0)
    scan_tool.transports = [flaky, steady]
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(scan_tool.run(stop))
        await asyncio.wait_for(scan_tool.started.wait(), 5)
        assert scan_tool.endpoints == {"steady": "steady-endpoint"}
        [problem] = scan_tool.problems()
        assert problem.startswith("scan tool flaky: ")
        async with asyncio.timeout(5):
            while "flaky" not in scan_tool.endpoints:
                await asyncio.sleep(0.01)
        assert scan_tool.problems() == []
        stop.set()
        await asyncio.wait_for(task, 5)
    assert (flaky.starts, flaky.closes, steady.closes) == (4, 1, 1)
    assert scan_tool.endpoints == {}
    # The same problem is logged once, not at every retry; its recovery once.
    events = [entry["event"] for entry in logs if entry.get("transport") == "flaky"]
    assert events == ["scan_tool_unavailable", "scan_tool_recovered", "scan_tool_listening"]
