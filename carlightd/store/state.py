"""Keeping the fault memory across restarts: one JSON file in `state_dir`, written atomically.

The same file carries the events not yet acknowledged by the broker (the outbox), so a transition
and the event announcing it are saved together or not at all.

A file that cannot be read, is not ours, or belongs to another vehicle is moved aside (renamed with
a `.rejected-<time>` suffix, so nothing is lost) and the daemon starts with an empty memory. So is
anything at the state path that is not a regular file: a directory, a fifo, a symbolic link,
dangling or not (a save renames a new file over the path, which would replace a link, never write
through it). When it cannot be moved either (a read-only disk), the daemon still starts, with an
empty memory, and says so.

A save that fails (a full disk, a read-only one) never stops the daemon: `problem` says why, in one
sentence naming the path and the OS error, until a save succeeds again; the temporary file of the
failed attempt is always removed, since on a small disk a leaked one would keep it full.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carlightd import logs
from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds import FAILURES
from carlightd.core.memory import (
    MAX_SEQ,
    DtcEntry,
    EventType,
    FaultEvent,
    FaultMemory,
    FaultRecord,
    FaultStatus,
    FreezeFrame,
)
from carlightd.errors import CarlightdError

log = logs.get("carlightd.persistence")

STATE_FILE = "fault-memory.json"
FORMAT = "carlightd.fault-memory"
# Far above a full outbox (10,000 events); a start never reads more than this.
MAX_STATE_BYTES = 64 * 1024 * 1024


class _StoredRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str
    kind: Kind
    failure: str
    status: FaultStatus
    since: datetime
    consequence_of: str | None
    # Version 2: the debounce state (a version 1 file has none: a pending record restarts at 0).
    counter: int = 0
    failing_streak: int = 0
    passing_streak: int = 0
    failed_last_test: bool = False
    failed_this_operation_cycle: bool = False
    tested_this_operation_cycle: bool = False
    # Added within version 2 with a default (an additive field needs no new version), so files
    # written before it still load; a bit 2 the older code had already dropped stays dropped.
    failed_last_operation_cycle: bool = False


class _StoredFreezeFrame(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    at: datetime
    ignition: Ignition
    engine_rpm: float | None
    bus_v: float | None
    battery_soc_percent: float | None
    temperature_c: float | None


class _StoredDtc(BaseModel):
    """Version 2: a DTC kept in the fault memory (`DtcEntry`)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    component: str
    kind: Kind
    failure: str
    first_failed: datetime
    last_failed: datetime
    occurrences: int = Field(ge=0)
    aging_counter: int = Field(ge=0)
    freeze_frame: _StoredFreezeFrame | None
    failed_last_test: bool
    failed_this_operation_cycle: bool
    tested_this_operation_cycle: bool
    failed_last_operation_cycle: bool = False  # added within version 2, as in _StoredRecord


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
    version: Literal[1, 2]  # 2 adds the debounce state and the stored DTCs; 1 is still read
    vehicle: str
    seq: int
    records: list[_StoredRecord]
    dtcs: list[_StoredDtc] = []
    outbox: list[_StoredEvent] = []


def _entry(d: _StoredDtc) -> DtcEntry:
    frame = d.freeze_frame
    return DtcEntry(
        d.component,
        d.kind,
        d.failure,
        d.first_failed,
        d.last_failed,
        occurrences=d.occurrences,
        aging_counter=d.aging_counter,
        freeze_frame=None if frame is None else FreezeFrame(**frame.model_dump()),
        failed_last_test=d.failed_last_test,
        failed_this_operation_cycle=d.failed_this_operation_cycle,
        tested_this_operation_cycle=d.tested_this_operation_cycle,
        failed_last_operation_cycle=d.failed_last_operation_cycle,
    )


def describe_error(error: OSError) -> str:
    """`[Errno 28] No space left on device`, without the file names an OSError may carry (a
    temporary file's name changes at every attempt, so the sentence would never be the same)."""
    if error.errno is None:
        return str(error)
    return f"[Errno {error.errno}] {error.strerror or os.strerror(error.errno)}"


def printable(path: Path) -> str:
    """A path for a log line or a status line: control characters escaped (a newline in a path
    must not start a new field of an sd_notify message)."""
    text = str(path)
    if text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def set_aside(path: Path) -> Path:
    """Rename whatever is at `path` (a symbolic link itself, never its target) to a free
    `<name>.rejected-<time>`: kept for a human to look at, out of the daemon's way."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = path.with_name(f"{path.name}.rejected-{stamp}")
    target, n = base, 1
    while os.path.lexists(target):  # two in one second must not overwrite each other
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    os.rename(path, target)
    return target


def make_dir(directory: Path) -> None:
    """`mkdir -p`, with "Not a directory" (not "File exists") when a file has the name."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)
        ) from None


class _UnusableError(CarlightdError):
    """Something is at the state path, but not a fault memory file that can be read."""


class StateRejectedError(CarlightdError):
    """The state file was unusable; it has been set aside (`moved_to`), or could not be (None)."""

    def __init__(self, path: Path, moved_to: Path | None, problem: str) -> None:
        if moved_to is not None:
            message = f"{path}: {problem}; moved to {moved_to.name}, starting afresh"
        else:
            message = f"{path}: {problem}; starting afresh without it"
        super().__init__(message)
        self.path = path
        self.moved_to = moved_to
        self.problem = problem


class StateStore:
    def __init__(self, state_dir: Path, vehicle_id: str) -> None:
        self.path = state_dir / STATE_FILE
        self.vehicle_id = vehicle_id
        # Why the state is not on disk now (None: the last save succeeded, or none was due yet);
        # one sentence naming the path and the error. Published by the daemon as it changes.
        self.problem: str | None = None
        # The memory's `seq` as last saved (or as loaded): a restart resumes from here.
        self.last_saved_seq = 0

    def load(self, memory: FaultMemory) -> list[FaultEvent]:
        """Fill `memory` from the file, if there is one; return the events still to be delivered.

        Raises StateRejectedError after moving a bad file aside; `memory` is then left empty. If
        it cannot even be moved, `problem` says so and the daemon carries on without it.
        """
        try:
            text = self._read()
            if text is None:
                self.last_saved_seq = memory.seq
                return []
            stored = _StoredMemory.model_validate_json(text)
            problem = self._foreign(stored)
        except _UnusableError as unusable:
            problem = str(unusable)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            problem = f"not a fault memory file ({where}: {first['msg']})"
        if problem is not None:
            self.last_saved_seq = memory.seq
            try:
                moved_to = set_aside(self.path)
            except OSError as error:
                problem = f"{problem}; cannot move it aside: {describe_error(error)}"
                self.problem = f"cannot use {printable(self.path)}: {problem}"
                raise StateRejectedError(self.path, None, problem) from None
            raise StateRejectedError(self.path, moved_to, problem)
        memory.seq = stored.seq
        self.last_saved_seq = stored.seq
        memory.records = {
            (r.component, r.failure): FaultRecord(
                r.component,
                r.kind,
                r.failure,
                r.status,
                r.since,
                r.consequence_of,
                failing_streak=r.failing_streak,
                passing_streak=r.passing_streak,
                failed_last_test=r.failed_last_test,
                failed_this_operation_cycle=r.failed_this_operation_cycle,
                tested_this_operation_cycle=r.tested_this_operation_cycle,
                failed_last_operation_cycle=r.failed_last_operation_cycle,
                counter=memory.counter_max if r.status == "confirmed" else r.counter,
            )
            for r in stored.records
        }
        memory.stored = {(d.component, d.failure): _entry(d) for d in stored.dtcs}
        for key, record in memory.records.items():
            if record.status == "confirmed" and key not in memory.stored:
                # A version 1 file: its confirmed faults are stored DTCs, confirmed once.
                memory.stored[key] = DtcEntry(
                    record.component,
                    record.kind,
                    record.failure,
                    record.since,
                    record.since,
                    occurrences=1,
                    failed_last_test=False,
                    failed_this_operation_cycle=False,
                    tested_this_operation_cycle=False,
                )
        return [
            FaultEvent(e.seq, e.type, e.component, e.kind, e.failure, e.dtc, e.at)
            for e in stored.outbox
        ]

    def _read(self) -> bytes | None:
        """The file's bytes; None when there is none. Never follows a link, never blocks on a
        fifo, never reads a device or a huge file."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _UnusableError(f"cannot be examined: {describe_error(error)}") from None
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.readlink(self.path)
            except OSError:
                target = "?"
            raise _UnusableError(f"a symbolic link (to {target}), not a file")
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "a special file")
            raise _UnusableError(f"{kind}, not a file")
        if info.st_size > MAX_STATE_BYTES:
            raise _UnusableError(f"too large for a fault memory file ({info.st_size} bytes)")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                # Replaced between the lstat and the open: judged again on what was opened.
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise _UnusableError("not a regular file")
                return handle.read(MAX_STATE_BYTES + 1)
        except OSError as error:
            raise _UnusableError(f"cannot be read: {describe_error(error)}") from None

    def _foreign(self, stored: _StoredMemory) -> str | None:
        if stored.vehicle != self.vehicle_id:
            return f"belongs to vehicle {stored.vehicle!r}, not {self.vehicle_id!r}"
        if not 0 <= stored.seq <= MAX_SEQ:
            return f"event sequence number {stored.seq} out of range (0 to {MAX_SEQ})"
        known = [(r.kind, r.failure) for r in stored.records]
        known += [(d.kind, d.failure) for d in stored.dtcs]
        for kind, failure in known:
            if failure not in FAILURES[kind]:
                return f"unknown failure {kind}/{failure}"
        seqs = [event.seq for event in stored.outbox]
        if seqs != sorted(seqs) or (seqs and seqs[-1] > stored.seq):
            return "outbox events out of order or ahead of the sequence"
        return None

    def save(self, memory: FaultMemory, outbox: Sequence[FaultEvent] = ()) -> None:
        """Write atomically: a temporary file in the same folder, flushed, then renamed over.

        On failure the OSError is raised, after `problem` has been set; on success `problem` is
        cleared and `last_saved_seq` moves on.
        """
        stored = _StoredMemory(
            format=FORMAT,
            version=2,
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
                    counter=r.counter,
                    failing_streak=r.failing_streak,
                    passing_streak=r.passing_streak,
                    failed_last_test=r.failed_last_test,
                    failed_this_operation_cycle=r.failed_this_operation_cycle,
                    tested_this_operation_cycle=r.tested_this_operation_cycle,
                    failed_last_operation_cycle=r.failed_last_operation_cycle,
                )
                for r in memory.faults()
            ],
            dtcs=[_StoredDtc.model_validate(e) for _, e in sorted(memory.stored.items())],
            outbox=[_StoredEvent.model_validate(event) for event in outbox],
        )
        try:
            self._write(stored.model_dump_json(indent=2).encode())
        except OSError as error:
            self.problem = f"cannot save {printable(self.path)}: {describe_error(error)}"
            raise
        self.problem = None
        self.last_saved_seq = memory.seq

    def _write(self, data: bytes) -> None:
        directory = self.path.parent
        make_dir(directory)  # it may have been deleted meanwhile
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=directory)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, self.path)
            except OSError as error:
                if error.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # A directory appeared at the state path while the daemon ran: out of the way.
                moved_to = set_aside(self.path)
                log.error(
                    "state_rejected",
                    path=printable(self.path),
                    problem="a directory, not a file",
                    moved_to=printable(moved_to),
                )
                os.replace(tmp, self.path)
        except BaseException:
            # A failed attempt leaves nothing behind: on a small disk it would stay full.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_leftovers(self) -> int:
        """Remove the temporary files of saves that a crash (or a power cut) interrupted; returns
        how many. Only while holding the state directory's lock: another daemon's save in
        progress would look the same."""
        removed = 0
        with contextlib.suppress(OSError):
            for entry in self.path.parent.glob(f".{STATE_FILE}.*"):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
        return removed
