"""Fault memory across restarts: confirmed faults and the event sequence survive; a corrupt or
foreign state file — or anything else at the state path — is reported, set aside (not deleted) and
never crashes the daemon; a failed save says why and leaves nothing behind; one daemon per state
directory. (The real full and read-only disks are in test_disk_trouble.py.)"""

from __future__ import annotations

import gc
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carlightd.app.daemon import build
from carlightd.core.diagnoser import Diagnoser
from carlightd.core.domain import Ignition
from carlightd.core.memory import FaultMemory, FreezeFrame
from carlightd.store import statelock
from carlightd.store.state import (
    MAX_STATE_BYTES,
    STATE_FILE,
    StateRejectedError,
    StateStore,
)
from carlightd.store.statelock import StateDirectoryInUseError
from tests.simulate import Bench, settings
from tests.test_cycle import Recorder
from tests.test_dem import FAIL, LAMP, OTHER, PASS


def test_confirmed_faults_and_sequence_survive_a_restart(tmp_path: Path) -> None:
    bench = Bench(ignition=Ignition.RUN)
    bench.car.inject("headlamp_right", "open_circuit")
    bench.car.inject("alternator", "overcharging")
    report = bench.run(5)
    store = StateStore(tmp_path, "demo-car")
    store.save(bench.memory)
    last_seq = report.events[-1].seq if report.events else bench.memory.seq
    assert bench.memory.seq == 4
    assert last_seq <= 4

    # A new daemon on the same state directory, the parts still broken.
    memory = FaultMemory(3, 3)
    store.load(memory)
    assert memory.seq == 4
    assert {(r.component, r.failure, r.status) for r in memory.records.values()} == {
        ("headlamp_right", "open_circuit", "confirmed"),
        ("alternator", "overcharging", "confirmed"),
    }
    restarted = Bench(ignition=Ignition.RUN)
    restarted.memory = memory
    restarted.diagnoser = Diagnoser(restarted.settings.components, memory)
    restarted.car.inject("alternator", "overcharging")  # still broken; the lamp was replaced
    events = []
    for _ in range(4):
        events += restarted.cycle().events
    assert [(e.type, e.component, e.seq) for e in events] == [
        ("fault_cleared", "headlamp_right", 5)
    ]
    assert restarted.cycle().warning_lamps["battery"] is True


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "nested" / "dir", "demo-car")
    memory = FaultMemory(1, 1, seq=7)
    store.save(memory)
    store.save(memory)
    assert sorted(p.name for p in store.path.parent.iterdir()) == [STATE_FILE]
    stored = json.loads(store.path.read_text())
    assert stored["seq"] == 7
    assert stored["vehicle"] == "demo-car"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00\xff not json", "not a fault memory file"),
        (b'{"format": "something.else", "version": 1}', "not a fault memory file"),
        (b"[1, 2, 3]", "not a fault memory file"),
        (
            b'{"format": "carlightd.fault-memory", "version": 1, "vehicle": "other-car",'
            b' "seq": 3, "records": []}',
            "belongs to vehicle 'other-car'",
        ),
        (
            b'{"format": "carlightd.fault-memory", "version": 1, "vehicle": "demo-car",'
            b' "seq": 3, "records": [{"component": "x", "kind": "lamp", "failure": "melted",'
            b' "status": "pending", "since": "2026-01-01T00:00:00Z", "consequence_of": null}]}',
            "unknown failure lamp/melted",
        ),
        (b'{"format": "carlightd.fault-memory", "version": 2}', "not a fault memory file"),
    ],
)
def test_corrupt_or_foreign_file_is_set_aside(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    store = StateStore(tmp_path, "demo-car")
    memory = FaultMemory(3, 3)
    with pytest.raises(StateRejectedError) as caught:
        store.load(memory)
    assert problem in str(caught.value)
    assert memory.records == {}
    assert memory.seq == 0
    assert not store.path.exists()
    assert caught.value.moved_to is not None
    assert caught.value.moved_to.read_bytes() == content  # kept for a human to look at
    store.save(memory)  # and the daemon carries on with a fresh file
    assert store.path.exists()


def test_daemon_starts_with_a_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{ truncated")
    daemon = build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    assert daemon.diagnoser.memory.records == {}
    names = sorted(p.name for p in tmp_path.iterdir())
    # The lock, a fresh state file saved at once, and the bad one kept aside.
    assert names[:2] == ["carlightd.lock", STATE_FILE]
    assert len(names) == 3
    assert names[2].startswith(f"{STATE_FILE}.rejected-")
    assert (tmp_path / names[2]).read_text() == "{ truncated"


# --- whatever is at the state path, the daemon starts --------------------------------------------


def _only_rejected(state_dir: Path) -> Path:
    rejected = [p for p in state_dir.iterdir() if p.name.startswith(f"{STATE_FILE}.rejected-")]
    assert len(rejected) == 1, sorted(p.name for p in state_dir.iterdir())
    return rejected[0]


def _starts_afresh(state_dir: Path) -> None:
    daemon = build(settings(diagnostics__state_dir=state_dir), outputs=[Recorder()])
    try:
        assert daemon.diagnoser.memory.seq == 0
        assert daemon.runner.store.problem is None  # the path is free again: saved at once
        assert (state_dir / STATE_FILE).is_file()
        assert json.loads((state_dir / STATE_FILE).read_text())["seq"] == 0
    finally:
        daemon.close()


def test_a_directory_at_the_state_path_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    (tmp_path / STATE_FILE / "someones-file").write_text("kept")
    _starts_afresh(tmp_path)
    assert (_only_rejected(tmp_path) / "someones-file").read_text() == "kept"


@pytest.mark.timeout(10)  # reading a fifo with no writer would wait for ever
def test_a_fifo_at_the_state_path_is_set_aside_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / STATE_FILE)
    _starts_afresh(tmp_path)
    assert stat.S_ISFIFO(os.lstat(_only_rejected(tmp_path)).st_mode)


@pytest.mark.parametrize("dangling", [True, False])
def test_a_symbolic_link_at_the_state_path_is_set_aside_never_followed(
    tmp_path: Path, dangling: bool
) -> None:
    target = tmp_path / "elsewhere.json"
    if not dangling:
        target.write_text("not to be touched")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_FILE).symlink_to(target)
    _starts_afresh(tmp_path / "state")
    moved = _only_rejected(tmp_path / "state")
    assert moved.is_symlink()
    assert os.readlink(moved) == str(target)
    if dangling:
        assert not target.exists()  # never created through the link
    else:
        assert target.read_text() == "not to be touched"


def test_a_huge_file_is_set_aside_unread(tmp_path: Path) -> None:
    with (tmp_path / STATE_FILE).open("wb") as huge:  # sparse: costs no disk
        huge.truncate(MAX_STATE_BYTES + 1)
    store = StateStore(tmp_path, "demo-car")
    with pytest.raises(StateRejectedError, match="too large"):
        store.load(FaultMemory(3, 3))
    assert _only_rejected(tmp_path).stat().st_size == MAX_STATE_BYTES + 1


def test_two_rejections_in_one_second_keep_both_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "demo-car")
    for content in (b"first", b"second", b"third"):
        (tmp_path / STATE_FILE).write_bytes(content)
        with pytest.raises(StateRejectedError):
            store.load(FaultMemory(3, 3))
    kept = sorted(p.read_bytes() for p in tmp_path.iterdir())
    assert kept == [b"first", b"second", b"third"]


def test_a_state_dir_that_is_a_file_is_reported_not_a_crash(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the directory should be")
    daemon = build(settings(diagnostics__state_dir=not_a_dir), outputs=[Recorder()])
    try:
        assert daemon.lock is not None
        assert not daemon.lock.locked
        assert daemon.runner.store.problem == (
            f"cannot save {not_a_dir / STATE_FILE}: [Errno 20] Not a directory"
        )
    finally:
        daemon.close()
    assert not_a_dir.read_text() == "a file where the directory should be"  # never moved


def test_a_directory_made_at_the_state_path_while_running_is_set_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "demo-car")
    memory = FaultMemory(3, 3, seq=5)
    store.save(memory)
    (tmp_path / STATE_FILE).unlink()
    (tmp_path / STATE_FILE).mkdir()
    (tmp_path / STATE_FILE / "inside").write_text("x")
    memory.seq = 6
    store.save(memory)
    assert json.loads(store.path.read_text())["seq"] == 6
    assert (_only_rejected(tmp_path) / "inside").read_text() == "x"
    assert store.problem is None
    assert store.last_saved_seq == 6


def saved(store: StateStore) -> tuple[str | None, int]:
    return store.problem, store.last_saved_seq


def test_a_failed_save_says_why_leaves_no_temporary_file_and_recovers(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", "demo-car")
    memory = FaultMemory(3, 3, seq=3)
    store.save(memory)
    assert saved(store) == (None, 3)
    # A file where a directory is needed: the temporary file cannot even be created there.
    parked = tmp_path / "parked"
    (tmp_path / "state").rename(parked)
    (tmp_path / "state").write_text("in the way")
    memory.seq = 4
    with pytest.raises(OSError, match="Not a directory"):
        store.save(memory)
    assert saved(store) == (f"cannot save {store.path}: [Errno 20] Not a directory", 3)
    (tmp_path / "state").unlink()
    parked.rename(tmp_path / "state")
    store.save(memory)
    assert saved(store) == (None, 4)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [STATE_FILE]


def test_temporary_files_of_interrupted_saves_are_removed_at_start(tmp_path: Path) -> None:
    for leftover in (f".{STATE_FILE}.abc123", f".{STATE_FILE}.zz_9"):
        (tmp_path / leftover).write_bytes(b"x" * 10_000)
    (tmp_path / "unrelated.json").write_text("{}")
    daemon = build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    daemon.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "carlightd.lock",
        STATE_FILE,
        "unrelated.json",
    ]


# --- one daemon per state directory -------------------------------------------------------------


def test_a_second_daemon_on_the_same_state_dir_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    first = build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    before = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(StateDirectoryInUseError) as refused:
        build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    assert refused.value.pid == os.getpid()
    assert str(refused.value).startswith(
        f"state directory {tmp_path} is in use by process {os.getpid()} ("
    )
    assert str(refused.value).endswith("); stop it first or use another diagnostics.state_dir")
    assert (tmp_path / STATE_FILE).read_bytes() == before  # the refused one touched nothing
    first.close()
    second = build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    assert second.lock is not None
    assert second.lock.locked
    second.close()


def test_the_holder_is_named_even_when_the_lock_file_names_someone_else(tmp_path: Path) -> None:
    lock = statelock.acquire(tmp_path)
    (tmp_path / statelock.LOCK_FILE).write_text("999999\nsome old daemon\n")  # a stale record
    with pytest.raises(StateDirectoryInUseError) as refused:
        statelock.acquire(tmp_path)
    assert refused.value.pid == os.getpid()  # from /proc/locks
    assert "999999" not in str(refused.value)
    lock.release()


def test_a_lock_path_that_is_a_directory_is_set_aside_and_locked(tmp_path: Path) -> None:
    (tmp_path / statelock.LOCK_FILE).mkdir()
    lock = statelock.acquire(tmp_path)
    try:
        assert lock.locked
        assert (tmp_path / statelock.LOCK_FILE).is_file()
        assert [p.name for p in tmp_path.iterdir() if ".rejected-" in p.name] != []
    finally:
        lock.release()


def test_a_daemon_dropped_without_close_gives_the_directory_up(tmp_path: Path) -> None:
    build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])  # built, thrown away
    gc.collect()
    again = build(settings(diagnostics__state_dir=tmp_path), outputs=[Recorder()])
    assert again.lock is not None
    assert again.lock.locked
    again.close()
    again.close()  # twice is harmless


def test_stored_dtcs_and_debounce_counters_survive_a_restart(tmp_path: Path) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    frame = FreezeFrame(t0, Ignition.RUN, 2000.0, 14.2, 80.0, 20.0)
    memory = FaultMemory(2, 2, aging_cycles=7)
    for finding in (FAIL, FAIL, PASS, PASS, OTHER):  # open_circuit healed, degraded pending
        memory.update({LAMP: finding}, t0, frame)
    memory.start_operation_cycle(t0)
    memory.update({LAMP: PASS}, t0)
    store = StateStore(tmp_path, "demo-car")
    store.save(memory)
    assert json.loads((tmp_path / STATE_FILE).read_text())["version"] == 2

    again = FaultMemory(2, 2, aging_cycles=7)
    StateStore(tmp_path, "demo-car").load(again)
    assert again.dtcs() == memory.dtcs()
    (dtc,) = [d for d in again.dtcs() if d.failure == "open_circuit"]
    assert dtc.freeze_frame == frame
    assert dtc.occurrences == 1
    assert {k: (r.status, r.counter) for k, r in again.records.items()} == {
        k: (r.status, r.counter) for k, r in memory.records.items()
    }


def pending_after_key_on(t0: datetime) -> FaultMemory:
    """open_circuit confirmed and still active, degraded healed but stored: both failed in the
    cycle that just ended, so both read pendingDTC (bit 2) in the new one."""
    memory = FaultMemory(1, 2)
    for finding in (OTHER, PASS, PASS, FAIL):
        memory.update({LAMP: finding}, t0)
    memory.start_operation_cycle(t0)
    return memory


def test_pending_dtc_of_the_last_operation_cycle_survives_a_restart(tmp_path: Path) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    memory = pending_after_key_on(t0)
    assert [(d.failure, d.dtc_status) for d in memory.dtcs()] == [
        ("degraded", 0x6C),
        ("open_circuit", 0xED),
    ]
    StateStore(tmp_path, "demo-car").save(memory)
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["version"] == 2
    assert [r["failed_last_operation_cycle"] for r in saved["records"]] == [True]
    assert [d["failed_last_operation_cycle"] for d in saved["dtcs"]] == [True, True]

    again = FaultMemory(1, 2)
    StateStore(tmp_path, "demo-car").load(again)
    assert again.dtcs() == memory.dtcs()
    record = again.records[(LAMP, "open_circuit")]
    assert int(record.status_byte()) == 0xED
    # And it still ends as ISO 14229-1 says: after a cycle in which the test ran and passed.
    again.update({LAMP: PASS}, t0)
    again.start_operation_cycle(t0)
    assert [(d.failure, d.dtc_status) for d in again.dtcs()] == [
        ("degraded", 0x68),
        ("open_circuit", 0xE8),
    ]


def test_a_restart_mid_cycle_is_a_new_operation_cycle_that_keeps_pending_dtc(
    tmp_path: Path,
) -> None:
    # The daemon starts an operation cycle when it starts: the cycle saved mid-way has ended.
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    memory = FaultMemory(1, 2)
    memory.update({LAMP: FAIL}, t0)
    StateStore(tmp_path, "demo-car").save(memory)
    again = FaultMemory(1, 2)
    StateStore(tmp_path, "demo-car").load(again)
    again.start_operation_cycle(t0)
    assert [d.dtc_status for d in again.dtcs()] == [0xED]


def test_a_state_file_written_before_failed_last_operation_cycle_still_loads(
    tmp_path: Path,
) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    StateStore(tmp_path, "demo-car").save(pending_after_key_on(t0))
    path = tmp_path / STATE_FILE
    saved = json.loads(path.read_text())
    for item in (*saved["records"], *saved["dtcs"]):
        del item["failed_last_operation_cycle"]
    path.write_text(json.dumps(saved))
    assert "failed_last_operation_cycle" not in path.read_text()

    memory = FaultMemory(1, 2)
    StateStore(tmp_path, "demo-car").load(memory)  # no StateRejectedError: nothing set aside
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]
    assert memory.seq == saved["seq"]
    # As the code that wrote it read them: bit 2 already gone after the key-on.
    assert [(d.failure, d.dtc_status) for d in memory.dtcs()] == [
        ("degraded", 0x68),
        ("open_circuit", 0xE9),
    ]
    assert memory.records[(LAMP, "open_circuit")].status == "confirmed"


def test_a_version_1_file_is_still_read(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "format": "carlightd.fault-memory",
                "version": 1,
                "vehicle": "demo-car",
                "seq": 9,
                "records": [
                    {
                        "component": "brake_left",
                        "kind": "lamp",
                        "failure": "open_circuit",
                        "status": "confirmed",
                        "since": "2026-03-01T00:00:00Z",
                        "consequence_of": None,
                    }
                ],
                "outbox": [],
            }
        )
    )
    memory = FaultMemory(3, 3)
    StateStore(tmp_path, "demo-car").load(memory)
    assert memory.seq == 9
    assert memory.records[("brake_left", "open_circuit")].status == "confirmed"
    (dtc,) = memory.dtcs()
    assert dtc.occurrences == 1
    assert dtc.freeze_frame is None
