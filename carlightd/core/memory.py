"""Fault memory, modelled on AUTOSAR's diagnostic event manager (Dem) and ISO 14229 (DESIGN §4).

Debounce, per (part, failure), with a fault-detection counter (FDC, -128..+127 as a scan tool reads
it). Internally the counter is kept in units of 1/(2c) of an FDC step (c = `confirm_cycles`), so
the steps are exact whatever c is:
- the first failing test creates the record, *pending*, with the counter at 0;
- a failing test steps it up by 127/c; reaching +127 *confirms* it: c failing tests in a row;
- a passing test steps it down by 127/(2c), half the up-step. A failure present in more than a
  third of the tests drifts upwards. The bound (property-tested): if at least half of the n tests
  since the record was created failed and n >= 4c, it is confirmed (12 tests by default);
- a pending record whose counter falls to -128 is dropped (`fault_cleared`): 2c + 3 passing tests
  in a row at the least (9 by default);
- once confirmed, only `heal_cycles` passing tests in a row of its own test heal it (the FDC goes
  from +127 to -128 across them); any failing test of it restores +127.
A test that could not run (NOT_RUN), or that failed with another failure of the same part, or whose
pass did not judge this failure (`SelfTestResult.judges`), changes nothing: it is not a pass.

Stored DTCs: a confirmed DTC stays stored after it heals, with the ISO 14229 status byte, its
occurrences (confirmations since the last clear), first and last failure time, a freeze frame taken
at its first confirmation and an aging counter: operation cycles (key off -> on) that were completed
with the test run and never failing. After `aging_cycles` of them it is removed (`dtc_aged`).
pendingDTC (bit 2) is ISO 14229-1 Annex D's: set while the test failed in the current operation
cycle or in the last completed one in which it ran; only a completed cycle in which the test ran and
never failed resets it (a cycle it never ran in changes nothing), and so does a clear. OBD-II mode
07 reads this bit (SAE J1979: "current or last completed driving cycle").
`clear` removes active faults and stored DTCs, each with a `fault_cleared` event.

Every transition is an event with a sequence number that rises by exactly one, across restarts
(the number is persisted with the records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from carlightd.core.domain import Ignition, Kind
from carlightd.core.dtc import WARNING_LAMPS, DTCStatus, WarningLamp, lookup
from carlightd.core.isolation import Finding
from carlightd.core.selftests import SelfTestResult

EventType = Literal["fault_pending", "fault_confirmed", "fault_cleared", "dtc_aged"]
FaultStatus = Literal["pending", "confirmed"]


# The largest event seq: every JSON reader counts it exactly.
MAX_SEQ = 2**53 - 1


@dataclass(frozen=True, slots=True)
class FaultEvent:
    seq: int
    type: EventType
    component: str
    kind: Kind
    failure: str
    dtc: str
    at: datetime


@dataclass(frozen=True, slots=True)
class FreezeFrame:
    """The conditions when a DTC was confirmed (ISO 14229 snapshot data; DESIGN §5 FREEZE_FRAME)."""

    at: datetime
    ignition: Ignition
    engine_rpm: float | None
    bus_v: float | None
    battery_soc_percent: float | None
    temperature_c: float | None


@dataclass(frozen=True, slots=True)
class StoredDtc:
    """One entry of the fault memory as a scan tool reads it (DESIGN §4, §5 DTC): a DTC stays
    stored after it heals, until it ages out or is cleared."""

    component: str
    kind: Kind
    failure: str
    dtc: str
    dtc_status: int  # the ISO 14229 status byte
    occurrences: int  # times it was confirmed since the last clear
    aging_counter: int  # operation cycles without failing since it last failed
    first_failed: datetime
    last_failed: datetime
    freeze_frame: FreezeFrame | None  # taken when it was (first) confirmed


# The fault-detection counter as a scan tool reads it (ISO 14229 / AUTOSAR Dem: a signed byte).
FDC_MIN = -128
FDC_MAX = 127


@dataclass(slots=True)
class FaultRecord:
    """An active fault: pending or confirmed, not yet healed."""

    component: str
    kind: Kind
    failure: str
    status: FaultStatus
    since: datetime
    consequence_of: str | None = None
    failing_streak: int = 0
    passing_streak: int = 0
    failed_last_test: bool = True
    failed_this_operation_cycle: bool = True
    tested_this_operation_cycle: bool = True
    # Failed in the last completed operation cycle in which the test ran (pendingDTC, bit 2).
    failed_last_operation_cycle: bool = False
    # The debounce counter in units of 1/(2 * confirm_cycles) FDC step (see the module doc).
    counter: int = 0

    @property
    def dtc(self) -> str:
        return lookup(self.kind, self.failure).code

    @property
    def description(self) -> str:
        return lookup(self.kind, self.failure).description

    @property
    def lamps(self) -> tuple[WarningLamp, ...]:
        return lookup(self.kind, self.failure).lamps if self.status == "confirmed" else ()

    def status_byte(self) -> DTCStatus:
        """The ISO 14229 status of this DTC.

        A record exists only for a test that has failed since the last clear, so
        testFailedSinceLastClear is set and testNotCompletedSinceLastClear is not.
        """
        bits = DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR
        if self.failed_last_test:
            bits |= DTCStatus.TEST_FAILED
        if self.failed_this_operation_cycle:
            bits |= DTCStatus.TEST_FAILED_THIS_OPERATION_CYCLE
        if self.failed_this_operation_cycle or self.failed_last_operation_cycle:
            bits |= DTCStatus.PENDING_DTC
        if self.status == "confirmed":
            bits |= DTCStatus.CONFIRMED_DTC
        if not self.tested_this_operation_cycle:
            bits |= DTCStatus.TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
        if self.lamps:
            bits |= DTCStatus.WARNING_INDICATOR_REQUESTED
        return bits


@dataclass(slots=True)
class DtcEntry:
    """What the memory keeps of a DTC from its first failure until it ages out or is cleared
    (the mutable side of `StoredDtc`). One that never confirmed goes with its pending record."""

    component: str
    kind: Kind
    failure: str
    first_failed: datetime
    last_failed: datetime
    occurrences: int = 0
    aging_counter: int = 0
    freeze_frame: FreezeFrame | None = None
    failed_last_test: bool = True
    failed_this_operation_cycle: bool = True
    tested_this_operation_cycle: bool = True
    # Failed in the last completed operation cycle in which the test ran (pendingDTC, bit 2).
    failed_last_operation_cycle: bool = False

    @property
    def dtc(self) -> str:
        return lookup(self.kind, self.failure).code


class FaultMemory:
    def __init__(
        self,
        confirm_cycles: int,
        heal_cycles: int,
        *,
        aging_cycles: int = 40,
        seq: int = 0,
        records: Iterable[FaultRecord] = (),
        stored: Iterable[DtcEntry] = (),
    ) -> None:
        self.confirm_cycles = confirm_cycles
        self.heal_cycles = heal_cycles
        self.aging_cycles = aging_cycles
        self.seq = seq  # the last event's number; the next event gets seq + 1
        self.records: dict[tuple[str, str], FaultRecord] = {
            (r.component, r.failure): r for r in records
        }
        self.stored: dict[tuple[str, str], DtcEntry] = {(e.component, e.failure): e for e in stored}
        # The counter's units: 1/(2c) of an FDC step, so both steps are whole numbers.
        self.counter_max = 2 * confirm_cycles * FDC_MAX  # confirmed
        self.counter_min = 2 * confirm_cycles * FDC_MIN  # a pending record is dropped
        self.up_step = 2 * FDC_MAX  # +127/c FDC
        self.down_step = FDC_MAX  # -127/(2c) FDC

    # --- reading ---------------------------------------------------------------------------------

    def faults(self) -> list[FaultRecord]:
        """Active records, confirmed first, then by part and failure (a stable order)."""
        return sorted(
            self.records.values(),
            key=lambda r: (r.status != "confirmed", r.component, r.failure),
        )

    def fdc(self, record: FaultRecord) -> int:
        """The fault-detection counter, -128..+127."""
        if record.status == "confirmed":
            # From +127 to -128 across heal_cycles passing tests in a row.
            drop = -(-(FDC_MAX - FDC_MIN) * record.passing_streak // self.heal_cycles)
            return max(FDC_MIN, FDC_MAX - drop)
        step = record.counter // (2 * self.confirm_cycles)
        return max(FDC_MIN, min(FDC_MAX, step))

    def status_byte(self, entry: DtcEntry) -> DTCStatus:
        """The ISO 14229 status byte of a stored DTC; confirmedDTC stays set after it heals."""
        record = self.records.get((entry.component, entry.failure))
        bits = DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR
        if entry.failed_last_test:
            bits |= DTCStatus.TEST_FAILED
        if entry.failed_this_operation_cycle:
            bits |= DTCStatus.TEST_FAILED_THIS_OPERATION_CYCLE
        if entry.failed_this_operation_cycle or entry.failed_last_operation_cycle:
            bits |= DTCStatus.PENDING_DTC
        if entry.occurrences > 0:
            bits |= DTCStatus.CONFIRMED_DTC
        if not entry.tested_this_operation_cycle:
            bits |= DTCStatus.TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
        if record is not None and record.lamps:
            bits |= DTCStatus.WARNING_INDICATOR_REQUESTED
        return bits

    def dtcs(self) -> list[StoredDtc]:
        """The whole fault memory as a scan tool reads it, by part then failure."""
        return [
            StoredDtc(
                e.component,
                e.kind,
                e.failure,
                e.dtc,
                int(self.status_byte(e)),
                e.occurrences,
                e.aging_counter,
                e.first_failed,
                e.last_failed,
                e.freeze_frame,
            )
            for _, e in sorted(self.stored.items())
        ]

    def remembered_roots(self) -> dict[str, set[str]]:
        roots: dict[str, set[str]] = {}
        for record in self.records.values():
            if record.consequence_of is None:
                roots.setdefault(record.component, set()).add(record.failure)
        return roots

    def warning_lamps(self) -> dict[WarningLamp, bool]:
        lit = {lamp for record in self.records.values() for lamp in record.lamps}
        return {lamp: lamp in lit for lamp in WARNING_LAMPS}

    # --- changing --------------------------------------------------------------------------------

    def _event(self, kind: EventType, of: FaultRecord | DtcEntry, at: datetime) -> FaultEvent:
        self.seq += 1
        return FaultEvent(self.seq, kind, of.component, of.kind, of.failure, of.dtc, at)

    def update(
        self,
        findings: Mapping[str, Finding],
        now: datetime,
        freeze_frame: FreezeFrame | None = None,
    ) -> list[FaultEvent]:
        """Feed one cycle's findings; returns the transitions, in order. `freeze_frame` is the
        cycle's conditions, kept with a DTC when it is first confirmed."""
        events: list[FaultEvent] = []
        # Entries are few and parts many: look them up by part once, not per part.
        by_part: dict[str, set[str]] = {}
        for component, failure in (*self.records, *self.stored):
            by_part.setdefault(component, set()).add(failure)
        for finding in findings.values():
            result = finding.result
            if result.failed and result.failure is not None:
                events.extend(self._failed(finding, result.failure, now, freeze_frame))
            for failure in sorted(by_part.get(finding.part_id, ())):
                if _passes(result, failure):
                    events.extend(self._passed((finding.part_id, failure), now))
        return events

    def _failed(
        self, finding: Finding, failure: str, now: datetime, frame: FreezeFrame | None
    ) -> list[FaultEvent]:
        events = []
        key = (finding.part_id, failure)
        entry = self.stored.get(key)
        if entry is None:
            entry = DtcEntry(finding.part_id, finding.kind, failure, now, now)
            self.stored[key] = entry
        entry.last_failed = now
        entry.aging_counter = 0
        entry.failed_last_test = True
        entry.failed_this_operation_cycle = True
        entry.tested_this_operation_cycle = True
        record = self.records.get(key)
        if record is None:
            record = FaultRecord(finding.part_id, finding.kind, failure, "pending", since=now)
            self.records[key] = record
            events.append(self._event("fault_pending", record, now))
        record.failing_streak += 1
        record.passing_streak = 0
        record.failed_last_test = True
        record.failed_this_operation_cycle = True
        record.tested_this_operation_cycle = True
        record.consequence_of = finding.consequence_of
        record.counter = min(self.counter_max, record.counter + self.up_step)
        if record.status == "pending" and record.counter >= self.counter_max:
            record.status = "confirmed"
            entry.occurrences += 1
            if entry.freeze_frame is None:
                entry.freeze_frame = frame
            events.append(self._event("fault_confirmed", record, now))
        return events

    def _passed(self, key: tuple[str, str], now: datetime) -> list[FaultEvent]:
        entry = self.stored.get(key)
        if entry is not None:
            entry.failed_last_test = False
            entry.tested_this_operation_cycle = True
        record = self.records.get(key)
        if record is None:  # a stored DTC, healed already
            return []
        record.passing_streak += 1
        record.failing_streak = 0
        record.failed_last_test = False
        record.tested_this_operation_cycle = True
        if record.status == "confirmed":
            healed = record.passing_streak >= self.heal_cycles
        else:
            record.counter -= self.down_step
            healed = record.counter <= self.counter_min
        if not healed:
            return []
        del self.records[key]
        if entry is not None and entry.occurrences == 0:  # never confirmed: nothing to keep
            del self.stored[key]
        return [self._event("fault_cleared", record, now)]

    def clear(self, now: datetime) -> list[FaultEvent]:
        """A scan tool's "clear DTCs": active faults and stored DTCs go, each with a
        `fault_cleared` event (active ones first); faults still present come back."""
        events = [self._event("fault_cleared", record, now) for record in self.faults()]
        events += [
            self._event("fault_cleared", entry, now)
            for key, entry in sorted(self.stored.items())
            if key not in self.records
        ]
        self.records.clear()
        self.stored.clear()
        return events

    def forget(self, keep: Mapping[str, str], now: datetime) -> list[FaultEvent]:
        """The car's parts changed (a reload): records and stored DTCs of parts that are gone, or
        are now another kind of part, are cleared, each with its `fault_cleared` event."""
        gone = [r for r in self.faults() if keep.get(r.component) != r.kind]
        for record in gone:
            del self.records[(record.component, record.failure)]
        events = [self._event("fault_cleared", record, now) for record in gone]
        for key, entry in sorted(self.stored.items()):
            if keep.get(entry.component) != entry.kind:
                del self.stored[key]
                if not any(
                    r.component == entry.component and r.failure == entry.failure for r in gone
                ):
                    events.append(self._event("fault_cleared", entry, now))
        return events

    def start_operation_cycle(self, now: datetime) -> list[FaultEvent]:
        """The key was turned on: the operation cycle that ended ages every healed DTC that was
        tested in it and never failed; one aged `aging_cycles` times goes (`dtc_aged`). Then the
        per-operation-cycle status bits start afresh, after pendingDTC has taken the ended cycle's
        verdict."""
        events = []
        for key, entry in sorted(self.stored.items()):
            if key in self.records:
                continue  # still active: it does not age
            if entry.tested_this_operation_cycle and not entry.failed_this_operation_cycle:
                entry.aging_counter += 1
                if entry.aging_counter >= self.aging_cycles:
                    del self.stored[key]
                    events.append(self._event("dtc_aged", entry, now))
        for entry in self.stored.values():
            _end_operation_cycle(entry)
        for record in self.records.values():
            _end_operation_cycle(record)
        return events


def _end_operation_cycle(item: FaultRecord | DtcEntry) -> None:
    """The cycle's verdict becomes the last completed cycle's; a cycle in which the test never
    ran leaves it as it was (ISO 14229-1 Annex D: pendingDTC is not updated then)."""
    if item.tested_this_operation_cycle or item.failed_this_operation_cycle:
        item.failed_last_operation_cycle = item.failed_this_operation_cycle
    item.failed_this_operation_cycle = False
    item.tested_this_operation_cycle = False


def _passes(result: SelfTestResult, failure: str) -> bool:
    """A pass for `failure`: the run decided it absent (`SelfTestResult.judges`). Another failure
    of the part found now, a broken sensor, a test not run are no pass for it, unless the run says
    it judged it (a test not run may still have found its sensor sound)."""
    return failure != result.failure and result.judges(failure)
