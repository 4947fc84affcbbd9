"""Keeping the fault memory across restarts: one JSON file in `state_dir`, written atomically.

The same file carries the events not yet acknowledged by the broker (the outbox), so a transition
and the event announcing it are saved together or not at all.

A file that cannot be read, is not ours, or belongs to another vehicle is moved aside (renamed with
a `.rejected-<time>` suffix, so nothing is lost) and the daemon starts with an empty memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from carlightd.diagnostics.memory import (
    EventType,
    FaultEvent,
    FaultMemory,
    FaultRecord,
    FaultStatus,
)
from carlightd.domain import FAILURES, Kind

STATE_FILE = "fault-memory.json"
FORMAT = "carlightd.fault-memory"


class _StoredRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str
    kind: Kind
    failure: str
    status: FaultStatus
    since: datetime
    consequence_of: str | None


class _StoredEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    seq: int
    type: EventType
    component: str
    kind: Kind
    failure: str
    dtc: str
    at: datetime


class _StoredMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["carlightd.fault-memory"]
    version: Literal[1]
    vehicle: str
    seq: int
    records: list[_StoredRecord]
    outbox: list[_StoredEvent] = []


class StateRejectedError(Exception):
    """The state file was unusable and has been set aside."""

    def __init__(self, path: Path, moved_to: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; moved to {moved_to.name}, starting afresh")
        self.path = path
        self.moved_to = moved_to
        self.problem = problem


class StateStore:
    def __init__(self, state_dir: Path, vehicle_id: str) -> None:
        self.path = state_dir / STATE_FILE
        self.vehicle_id = vehicle_id

    def load(self, memory: FaultMemory) -> list[FaultEvent]:
        """Fill `memory` from the file, if there is one; return the events still to be delivered.

        Raises StateRejectedError after moving a bad file aside; `memory` is then left empty.
        """
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            stored = _StoredMemory.model_validate_json(text)
            problem = self._foreign(stored)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            problem = f"not a fault memory file ({where}: {first['msg']})"
        if problem is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            moved_to = self.path.with_name(f"{self.path.name}.rejected-{stamp}")
            os.replace(self.path, moved_to)
            raise StateRejectedError(self.path, moved_to, problem)
        memory.seq = stored.seq
        memory.records = {
            (r.component, r.failure): FaultRecord(
                r.component,
                r.kind,
                r.failure,
                r.status,
                r.since,
                r.consequence_of,
                failed_last_test=False,
                failed_this_operation_cycle=False,
                tested_this_operation_cycle=False,
            )
            for r in stored.records
        }
        return [
            FaultEvent(e.seq, e.type, e.component, e.kind, e.failure, e.dtc, e.at)
            for e in stored.outbox
        ]

    def _foreign(self, stored: _StoredMemory) -> str | None:
        if stored.vehicle != self.vehicle_id:
            return f"belongs to vehicle {stored.vehicle!r}, not {self.vehicle_id!r}"
        if stored.seq < 0:
            return "negative event sequence number"
        for record in stored.records:
            if record.failure not in FAILURES[record.kind]:
                return f"unknown failure {record.kind}/{record.failure}"
        seqs = [event.seq for event in stored.outbox]
        if seqs != sorted(seqs) or (seqs and seqs[-1] > stored.seq):
            return "outbox events out of order or ahead of the sequence"
        return None

    def save(self, memory: FaultMemory, outbox: Sequence[FaultEvent] = ()) -> None:
        """Write atomically: a temporary file in the same folder, flushed, then renamed over."""
        stored = _StoredMemory(
            format=FORMAT,
            version=1,
            vehicle=self.vehicle_id,
            seq=memory.seq,
            records=[
                _StoredRecord(
                    component=r.component,
                    kind=r.kind,
                    failure=r.failure,
                    status=r.status,
                    since=r.since,
                    consequence_of=r.consequence_of,
                )
                for r in memory.faults()
            ],
            outbox=[_StoredEvent.model_validate(event) for event in outbox],
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(stored.model_dump_json(indent=2).encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
