"""Fault memory across restarts: confirmed faults and the event sequence survive; a corrupt or
foreign state file is reported, set aside (not deleted) and never crashes the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carlightd.diagnostics.diagnoser import Diagnoser
from carlightd.diagnostics.memory import FaultMemory
from carlightd.diagnostics.persistence import STATE_FILE, StateRejectedError, StateStore
from carlightd.domain import Ignition
from carlightd.service.daemon import build
from tests.simulate import Bench, settings
from tests.test_cycle import Recorder


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
    restarted.diagnoser = Diagnoser(restarted.settings, memory)
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
    assert caught.value.moved_to.read_bytes() == content  # kept for a human to look at
    store.save(memory)  # and the daemon carries on with a fresh file
    assert store.path.exists()


def test_daemon_starts_with_a_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{ truncated")
    daemon = build(settings(diagnostics__state_dir=tmp_path), sink=Recorder())
    assert daemon.diagnoser.memory.records == {}
    names = sorted(p.name for p in tmp_path.iterdir())
    # The lock, a fresh state file saved at once, and the bad one kept aside.
    assert names[:2] == ["carlightd.lock", STATE_FILE]
    assert len(names) == 3
    assert names[2].startswith(f"{STATE_FILE}.rejected-")
    assert (tmp_path / names[2]).read_text() == "{ truncated"
