"""Fault memory, modelled on a car's diagnostic event manager (DESIGN §4).

One debounce record per (part, failure): the first failing test makes it *pending*; `confirm_cycles`
failing tests in a row *confirm* it; `heal_cycles` passing tests in a row *clear* it. A test that
could not run changes nothing. Every transition is an event with a sequence number that rises by
exactly one, across restarts (the number is persisted with the records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind
from carlightd.core.dtc import WARNING_LAMPS, DTCStatus, WarningLamp, lookup
from carlightd.core.isolation import Finding
from carlightd.core.selftests import Verdict

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


@dataclass(slots=True)
class FaultRecord:
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
        if self.status == "pending" or self.failed_this_operation_cycle:
            bits |= DTCStatus.PENDING_DTC
        if self.status == "confirmed":
            bits |= DTCStatus.CONFIRMED_DTC
        if not self.tested_this_operation_cycle:
            bits |= DTCStatus.TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
        if self.lamps:
            bits |= DTCStatus.WARNING_INDICATOR_REQUESTED
        return bits


class FaultMemory:
    def __init__(
        self,
        confirm_cycles: int,
        heal_cycles: int,
        *,
        seq: int = 0,
        records: Iterable[FaultRecord] = (),
    ) -> None:
        self.confirm_cycles = confirm_cycles
        self.heal_cycles = heal_cycles
        self.seq = seq  # the last event's number; the next event gets seq + 1
        self.records: dict[tuple[str, str], FaultRecord] = {
            (r.component, r.failure): r for r in records
        }

    # --- reading ---------------------------------------------------------------------------------

    def faults(self) -> list[FaultRecord]:
        """Active records, confirmed first, then by part and failure (a stable order)."""
        return sorted(
            self.records.values(),
            key=lambda r: (r.status != "confirmed", r.component, r.failure),
        )

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

    def _event(self, kind: EventType, record: FaultRecord, at: datetime) -> FaultEvent:
        self.seq += 1
        return FaultEvent(
            self.seq, kind, record.component, record.kind, record.failure, record.dtc, at
        )

    def update(self, findings: Mapping[str, Finding], now: datetime) -> list[FaultEvent]:
        """Feed one cycle's findings; returns the transitions, in order."""
        events: list[FaultEvent] = []
        # Records are few and parts many: look them up by part once, not per part.
        by_part: dict[str, list[FaultRecord]] = {}
        for record in self.records.values():
            by_part.setdefault(record.component, []).append(record)
        for finding in findings.values():
            result = finding.result
            if result.verdict is Verdict.NOT_RUN:
                continue
            failing = result.failure if result.failed else None
            if failing is not None:
                events.extend(self._failed(finding, failing, now))
            # The other failures of this part were tested and not seen; unless the sensor is
            # broken, which says nothing about them.
            if failing == SENSOR_FAULT:
                continue
            for record in by_part.get(finding.part_id, ()):
                if record.failure != failing:
                    events.extend(self._passed(record, now))
        return events

    def _failed(self, finding: Finding, failure: str, now: datetime) -> list[FaultEvent]:
        events = []
        key = (finding.part_id, failure)
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
        if record.status == "pending" and record.failing_streak >= self.confirm_cycles:
            record.status = "confirmed"
            events.append(self._event("fault_confirmed", record, now))
        return events

    def _passed(self, record: FaultRecord, now: datetime) -> list[FaultEvent]:
        record.passing_streak += 1
        record.failing_streak = 0
        record.failed_last_test = False
        record.tested_this_operation_cycle = True
        if record.passing_streak >= self.heal_cycles:
            del self.records[(record.component, record.failure)]
            return [self._event("fault_cleared", record, now)]
        return []

    def clear(self, now: datetime) -> list[FaultEvent]:
        """A scan tool's "clear DTCs": every record goes; faults still present come back."""
        events = [self._event("fault_cleared", record, now) for record in self.faults()]
        self.records.clear()
        return events

    def forget(self, keep: Mapping[str, str], now: datetime) -> list[FaultEvent]:
        """The car's parts changed (a reload): records of parts that are gone, or are now another
        kind of part, are cleared, each with its `fault_cleared` event."""
        gone = [r for r in self.faults() if keep.get(r.component) != r.kind]
        for record in gone:
            del self.records[(record.component, record.failure)]
        return [self._event("fault_cleared", record, now) for record in gone]

    def start_operation_cycle(self) -> None:
        """The key was turned on: the per-operation-cycle status bits start afresh."""
        for record in self.records.values():
            record.failed_this_operation_cycle = False
            record.tested_this_operation_cycle = False
