"""The cycle loop: read every sensor concurrently, diagnose, remember, hand the result on.

The period is kept by `Schedule` (a fixed grid on the monotonic clock, so small delays never
accumulate into drift); a cycle that overruns skips the ticks it missed and says so in the log
rather than running late for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from carlightd import logs
from carlightd.core.diagnoser import CycleReport, Diagnoser
from carlightd.core.domain import Reading
from carlightd.core.memory import FaultEvent
from carlightd.core.ports import Source
from carlightd.core.schedule import Schedule
from carlightd.core.selftests import NO_READING, ReadOutcome
from carlightd.outputs import Output
from carlightd.runtime.waiting import wait_any
from carlightd.store.outbox import Outbox
from carlightd.store.state import StateStore, printable

log = logs.get("carlightd.cycle")

# While the state cannot be saved, a save is tried again this often even with nothing new to save:
# the recovery is seen (and logged) soon after the disk has room again.
SAVE_RETRY_S = 1.0


class PartReader(Protocol):
    """A driver that reads one part at a time (real hardware would): `read_all` below polls it
    with a task and a timeout per read. The simulated car answers a whole poll at once instead
    (vehicle/readout.py), which costs a fleet of cars far less."""

    async def read(self, part_id: str) -> Reading: ...


async def read_all(
    reader: PartReader, part_ids: Iterable[str], timeout_s: float
) -> dict[str, ReadOutcome]:
    """Read every part at once, each read in its own task with its own timeout; a read that is
    late or broken becomes NO_READING, never a stall."""

    async def one(part_id: str) -> ReadOutcome:
        try:
            async with asyncio.timeout(timeout_s):
                return await reader.read(part_id)
        except TimeoutError:
            return NO_READING
        except Exception:
            log.exception("sensor_read_failed", component=part_id)
            return NO_READING

    async with asyncio.TaskGroup() as group:
        tasks = {pid: group.create_task(one(pid), name=f"read:{pid}") for pid in part_ids}
    return {pid: task.result() for pid, task in tasks.items()}


def log_event(event: FaultEvent) -> None:
    level = log.warning if event.type != "fault_cleared" else log.info
    level(
        event.type,
        component=event.component,
        failure=event.failure,
        dtc=event.dtc,
        seq=event.seq,
    )


class CycleRunner:
    def __init__(
        self,
        *,
        source: Source,
        diagnoser: Diagnoser,
        store: StateStore,
        outputs: Sequence[Output],
        cycle_s: float,
        read_timeout_s: float,
        outbox: Outbox | None = None,
        on_cycle: Callable[[CycleReport, bool], None] = lambda report, on_time: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.diagnoser = diagnoser
        self.store = store
        # Each report goes to every output; the app may add one after building the loop (the
        # MQTT output carries the commands whose effects it then reports).
        self.outputs = outputs
        self.cycle_s = cycle_s
        self.read_timeout_s = read_timeout_s
        self.outbox = outbox if outbox is not None else Outbox()
        self.clock = clock
        self.wall_clock = wall_clock
        self.overruns = 0
        self.last_report: CycleReport | None = None
        # Called after every cycle with whether it finished on time (watchdog, heartbeat).
        self.on_cycle = on_cycle
        self._regrid = False
        self._between_cycles: list[Callable[[], None]] = []
        self._save_attempt_at = float("-inf")

    def set_period(self, cycle_s: float, read_timeout_s: float) -> None:
        """A new period from a reload: the schedule starts a fresh grid after this cycle."""
        self.cycle_s = cycle_s
        self.read_timeout_s = read_timeout_s
        self._regrid = True

    def between_cycles(self, change: Callable[[], None]) -> None:
        """Make `change` before the next cycle starts, never while a cycle is reading the car."""
        self._between_cycles.append(change)

    async def run_once(self) -> CycleReport:
        while self._between_cycles:
            self._between_cycles.pop(0)()
        self.source.advance(self.cycle_s)
        readings = await self.source.read_all(self.diagnoser.tests, self.read_timeout_s)
        report = self.diagnoser.diagnose(self.source.ignition, readings, self.wall_clock())
        await self._hand_on(report)
        return report

    async def clear_faults(self) -> CycleReport:
        """Clear the fault memory now and pass the result on at once, between cycles."""
        report = self.diagnoser.clear(self.wall_clock())
        await self._hand_on(report)
        return report

    async def _hand_on(self, report: CycleReport) -> None:
        for event in report.events:
            log_event(event)
        if report.events:
            # The transitions and the events announcing them are saved together, before any
            # attempt to publish them.
            self.outbox.extend(report.events)
            self.save()
        self.last_report = report
        for output in self.outputs:
            try:
                await output.deliver(report)
            except Exception:
                # Whatever happens in one output, the diagnosis and the others carry on.
                log.exception("output_failed", output=type(output).__name__, cycle=report.cycle)

    def save(self) -> None:
        """Save the memory and the outbox (`store.problem` says whether it worked). A failure is
        logged when it starts (or changes), not at every attempt, and the recovery once; the
        diagnosis goes on either way, and while the state is not saved the loop tries again every
        SAVE_RETRY_S."""
        before = self.store.problem
        self._save_attempt_at = self.clock()
        try:
            self.store.save(self.diagnoser.memory, self.outbox.pending())
        except OSError:
            if self.store.problem != before:
                log.error(
                    "state_save_failed",
                    path=printable(self.store.path),
                    problem=self.store.problem,
                    seq=self.diagnoser.memory.seq,
                    last_saved_seq=self.store.last_saved_seq,
                )
            return
        if before is not None:
            path = printable(self.store.path)
            log.info("state_save_recovered", path=path, seq=self.store.last_saved_seq)

    def _retry_save(self) -> None:
        if self.store.problem is not None and self.clock() - self._save_attempt_at >= SAVE_RETRY_S:
            self.save()

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until `stop` is set; the current cycle always completes."""
        schedule = Schedule(self.clock(), self.cycle_s)
        while not stop.is_set():
            report = await self.run_once()
            now = self.clock()
            if self._regrid:
                slot, self._regrid = schedule.restart(now, self.cycle_s), False
            else:
                slot = schedule.next_slot(now)
            if not slot.on_time:
                self.overruns += slot.missed
                log.warning("cycle_overrun", missed_ticks=slot.missed, late_s=round(slot.late_s, 3))
            self._retry_save()
            self.on_cycle(report, slot.on_time)
            await wait_any(stop, timeout_s=slot.due - self.clock())
        self.save()
