"""The cycle loop: concurrent reads with a per-read timeout, a period kept without drift, results
handed to the sink, one log line per fault transition."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from carlightd import logs
from carlightd.app.cycle import read_all
from carlightd.app.daemon import build
from carlightd.core.diagnoser import CycleReport
from carlightd.core.domain import Reading
from carlightd.core.kinds.controller import ControllerReading
from carlightd.core.selftests import NO_READING
from tests.simulate import settings


class Recorder:
    """A sink that notes when each report arrived (and can be slow once, on purpose)."""

    def __init__(self, slow_cycle: int | None = None, slow_s: float = 0.0) -> None:
        self.reports: list[CycleReport] = []
        self.arrivals: list[float] = []
        self.slow_cycle = slow_cycle
        self.slow_s = slow_s
        self.stop_after: int | None = None
        self.stop = asyncio.Event()

    async def deliver(self, report: CycleReport) -> None:
        self.reports.append(report)
        self.arrivals.append(time.monotonic())
        if len(self.reports) == self.stop_after:
            self.stop.set()
        if report.cycle == self.slow_cycle:
            await asyncio.sleep(self.slow_s)


class Sensors:
    """Fake sensors that note how many reads are in flight at once."""

    def __init__(self, hung: set[str], broken: set[str]) -> None:
        self.hung = hung
        self.broken = broken
        self.in_flight = 0
        self.most_in_flight = 0

    async def read(self, part_id: str) -> Reading:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if part_id in self.hung:
                await asyncio.Event().wait()
            await asyncio.sleep(0.01)
            if part_id in self.broken:
                raise RuntimeError("driver bug")
            return ControllerReading(12.5)
        finally:
            self.in_flight -= 1


async def test_a_hung_sensor_never_stalls_the_others() -> None:
    parts = [f"p{i}" for i in range(20)]
    sensors = Sensors(hung={"p3", "p7"}, broken={"p9"})
    # Two reads never answer: only the per-read timeout lets this finish at all.
    async with asyncio.timeout(10):
        readings = await read_all(sensors, parts, timeout_s=0.2)
    assert readings["p3"] is NO_READING
    assert readings["p7"] is NO_READING
    assert readings["p9"] is NO_READING
    assert sum(1 for r in readings.values() if r is not NO_READING) == 17
    assert sensors.most_in_flight == 20  # every read was started before any finished
    assert sensors.in_flight == 0  # the hung reads were cancelled, not left behind


async def run_daemon(tmp_path: Path, sink: Recorder, cycles: int, **diag: float) -> list[bool]:
    """Run the real loop for `cycles` cycles; returns each cycle's on-time flag."""
    daemon = build(
        settings(
            diagnostics__state_dir=tmp_path,
            diagnostics__cycle_s=diag.get("cycle_s", 0.05),
            diagnostics__read_timeout_s=diag.get("read_timeout_s", 0.02),
        ),
        outputs=[sink],
    )
    on_time: list[bool] = []
    daemon.runner.on_cycle = lambda report, punctual: on_time.append(punctual)
    sink.stop_after = cycles
    async with asyncio.timeout(30):
        await daemon.runner.run(sink.stop)
    return on_time


async def test_dead_controller_cycle_still_completes(tmp_path: Path) -> None:
    sink = Recorder()
    daemon = build(
        settings(
            diagnostics__state_dir=tmp_path,
            diagnostics__cycle_s=0.2,
            diagnostics__read_timeout_s=0.05,
        ),
        outputs=[sink],
    )
    daemon.car.inject("bcm", "no_response")
    # The dead controller never answers: the cycle ends because of the read timeout.
    async with asyncio.timeout(10):
        report = await daemon.runner.run_once()
    assert report.components["bcm"].failure == "no_response"
    assert report.components["tail_left"].status == "untested"
    assert report.components["tail_left"].reason == "controller bcm unreachable"
    assert sink.reports == [report]


# The drift-free grid itself is tested with exact times in test_schedule.py; these run the real
# loop and check only what a busy machine cannot make false.


async def test_the_loop_runs_cycles_until_stopped(tmp_path: Path) -> None:
    sink = Recorder()
    on_time = await run_daemon(tmp_path, sink, cycles=10, cycle_s=0.05)
    assert [r.cycle for r in sink.reports] == list(range(1, 11))
    assert len(on_time) == 10
    # Cycles wait for their tick: the tenth cannot end less than eight periods after the first.
    assert sink.arrivals[-1] - sink.arrivals[0] >= 8 * 0.05
    assert (tmp_path / "fault-memory.json").exists()  # saved on the way out


async def test_an_overrun_is_flagged_and_its_ticks_skipped(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    logs.configure(json=True)
    sink = Recorder(slow_cycle=3, slow_s=0.13)  # 2.6 periods: at least two ticks are missed
    on_time = await run_daemon(tmp_path, sink, cycles=6, cycle_s=0.05)
    assert on_time[2] is False  # cycle 3 is late, so the watchdog would not be fed for it
    overruns = [
        json.loads(line)
        for line in capfd.readouterr().err.splitlines()
        if line and json.loads(line)["event"] == "cycle_overrun"
    ]
    assert overruns
    assert overruns[0]["missed_ticks"] >= 2
    assert overruns[0]["late_s"] >= 0.07  # 0.13 s in the sink, less the one period allowed


async def test_one_log_line_per_fault_transition(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    logs.configure(json=True)
    daemon = build(
        settings(
            diagnostics__state_dir=tmp_path,
            diagnostics__confirm_cycles=2,
            diagnostics__cycle_s=0.1,
            diagnostics__read_timeout_s=0.05,
        ),
        outputs=[Recorder()],
    )
    daemon.car.inject("brake_left", "open_circuit")
    for _ in range(3):
        await daemon.runner.run_once()
    daemon.car.repair("brake_left")
    for _ in range(3):
        await daemon.runner.run_once()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    transitions = [line for line in lines if line["event"].startswith("fault_")]
    assert [
        (t["event"], t["component"], t["failure"], t["dtc"], t["seq"]) for t in transitions
    ] == [
        ("fault_pending", "brake_left", "open_circuit", "B1200", 1),
        ("fault_confirmed", "brake_left", "open_circuit", "B1200", 2),
        ("fault_cleared", "brake_left", "open_circuit", "B1200", 3),
    ]
    assert all(t["timestamp"].endswith("Z") for t in transitions)
    # Transitions are persisted as they happen.
    assert json.loads((tmp_path / "fault-memory.json").read_text())["seq"] == 3


class BrokenOutput:
    """An output whose every delivery fails."""

    def __init__(self) -> None:
        self.attempts = 0

    async def deliver(self, report: CycleReport) -> None:
        self.attempts += 1
        raise RuntimeError("this output is broken")


async def test_a_failing_output_never_stops_the_loop_or_the_others(tmp_path: Path) -> None:
    broken, after = BrokenOutput(), Recorder()
    daemon = build(
        settings(
            diagnostics__state_dir=tmp_path,
            diagnostics__cycle_s=0.05,
            diagnostics__read_timeout_s=0.02,
        ),
        outputs=[broken, after],
    )
    daemon.car.inject("brake_left", "open_circuit")
    after.stop_after = 5
    async with asyncio.timeout(30):
        await daemon.runner.run(after.stop)
    assert broken.attempts == 5
    assert [report.cycle for report in after.reports] == [1, 2, 3, 4, 5]
    assert after.reports[-1].faults  # the diagnosis went on behind the broken output
