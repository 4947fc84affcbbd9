"""Fault memory: debounce, DTC status bits, warning lamps, events and their sequence numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carlightd.core.domain import Kind
from carlightd.core.dtc import DTCStatus
from carlightd.core.isolation import Finding
from carlightd.core.memory import FaultMemory
from carlightd.core.selftests import PASSED, SelfTestResult, Verdict

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LAMP = "brake_left"


def failing(part: str = LAMP, failure: str = "open_circuit", kind: Kind = Kind.LAMP) -> Finding:
    return Finding(part, kind, SelfTestResult(Verdict.FAILED, failure, "judged"))


def passing(part: str = LAMP, kind: Kind = Kind.LAMP) -> Finding:
    return Finding(part, kind, PASSED)


def not_run(part: str = LAMP, kind: Kind = Kind.LAMP) -> Finding:
    return Finding(part, kind, SelfTestResult(Verdict.NOT_RUN, reason="ignition off"))


def feed(memory: FaultMemory, finding: Finding, cycles: int = 1) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for i in range(cycles):
        events = memory.update({finding.part_id: finding}, T0 + timedelta(seconds=i))
        out += [(e.type, e.seq) for e in events]
    return out


def test_pending_then_confirmed_then_healed() -> None:
    memory = FaultMemory(confirm_cycles=3, heal_cycles=2)
    assert feed(memory, failing()) == [("fault_pending", 1)]
    record = memory.records[(LAMP, "open_circuit")]
    assert record.status == "pending"
    assert feed(memory, failing()) == []
    assert feed(memory, failing()) == [("fault_confirmed", 2)]
    assert memory.records[(LAMP, "open_circuit")].status == "confirmed"
    assert record.dtc == "B1200"
    assert feed(memory, passing()) == []
    assert feed(memory, passing()) == [("fault_cleared", 3)]
    assert memory.records == {}


def test_a_passing_test_steps_the_counter_down_by_half_an_up_step() -> None:
    # Counter-based debounce: +127/3 per fail, -127/6 per pass (FDC units). F F P F F is
    # 2 - 0.5 + 2 = 3.5 up-steps: over +127, confirmed on the fifth test.
    memory = FaultMemory(confirm_cycles=3, heal_cycles=5)
    feed(memory, failing(), 2)
    record = memory.records[(LAMP, "open_circuit")]
    assert memory.fdc(record) == 84
    feed(memory, passing())
    assert memory.fdc(record) == 63
    assert feed(memory, failing()) == []
    assert record.status == "pending"
    assert feed(memory, failing()) == [("fault_confirmed", 2)]
    assert memory.fdc(record) == 127


def test_a_pending_record_goes_when_its_counter_reaches_minus_128() -> None:
    # From +42 (one failure) down by 21.17 per pass: 9 passes in a row (2c + 3).
    memory = FaultMemory(confirm_cycles=3, heal_cycles=1)
    feed(memory, failing())
    assert feed(memory, passing(), 8) == []
    assert feed(memory, passing()) == [("fault_cleared", 2)]
    assert memory.records == {}
    assert memory.stored == {}  # never confirmed: nothing stored


def test_not_run_changes_nothing() -> None:
    memory = FaultMemory(confirm_cycles=2, heal_cycles=2)
    feed(memory, failing(), 2)
    assert feed(memory, not_run(), 50) == []
    assert memory.records[(LAMP, "open_circuit")].status == "confirmed"


def test_a_broken_sensor_does_not_heal_the_parts_other_faults() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=1)
    feed(memory, failing(failure="degraded"))
    events = feed(memory, failing(failure="sensor_fault"), 3)
    assert ("fault_cleared", 3) not in events
    assert set(memory.records) == {(LAMP, "degraded"), (LAMP, "sensor_fault")}
    # Nor does another failure of the part: it is not a pass for this one (issue 12).
    memory2 = FaultMemory(confirm_cycles=1, heal_cycles=1)
    feed(memory2, failing(failure="degraded"))
    feed(memory2, failing(failure="open_circuit"), 5)
    assert set(memory2.records) == {(LAMP, "degraded"), (LAMP, "open_circuit")}


def test_confirm_after_one_cycle_emits_both_events_in_order() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=1)
    assert feed(memory, failing()) == [("fault_pending", 1), ("fault_confirmed", 2)]


def test_clear_removes_everything_and_says_so_and_faults_come_back() -> None:
    memory = FaultMemory(confirm_cycles=2, heal_cycles=2, seq=41)
    feed(memory, failing(), 2)
    feed(memory, failing("battery", "weak", Kind.BATTERY), 2)
    events = memory.clear(T0)
    assert [(e.type, e.component, e.seq) for e in events] == [
        ("fault_cleared", "battery", 46),
        ("fault_cleared", LAMP, 47),
    ]
    assert memory.records == {}
    assert not any(memory.warning_lamps().values())
    assert feed(memory, failing()) == [("fault_pending", 48)]


def test_warning_lamps_follow_confirmed_faults_only() -> None:
    memory = FaultMemory(confirm_cycles=2, heal_cycles=1)
    feed(memory, failing())
    assert memory.warning_lamps() == {"bulb": False, "battery": False, "check_engine": False}
    feed(memory, failing())
    assert memory.warning_lamps() == {"bulb": True, "battery": False, "check_engine": False}
    feed(memory, failing("alternator", "no_output", Kind.ALTERNATOR), 2)
    assert memory.warning_lamps() == {"bulb": True, "battery": True, "check_engine": True}
    feed(memory, passing())
    assert memory.warning_lamps() == {"bulb": False, "battery": True, "check_engine": True}


def test_iso14229_status_bits() -> None:
    memory = FaultMemory(confirm_cycles=2, heal_cycles=3)
    feed(memory, failing())
    record = memory.records[(LAMP, "open_circuit")]
    pending = DTCStatus(record.status_byte())
    assert pending == (
        DTCStatus.TEST_FAILED
        | DTCStatus.TEST_FAILED_THIS_OPERATION_CYCLE
        | DTCStatus.PENDING_DTC
        | DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR
    )
    feed(memory, failing())
    assert record.status_byte() == pending | DTCStatus.CONFIRMED_DTC | (
        DTCStatus.WARNING_INDICATOR_REQUESTED
    )
    assert int(record.status_byte()) == 0xAF
    feed(memory, passing())
    assert not record.status_byte() & DTCStatus.TEST_FAILED
    # A new operation cycle (key turned on again) before the part has been tested.
    assert memory.start_operation_cycle(T0) == []
    bits = record.status_byte()
    assert bits & DTCStatus.TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
    assert not bits & DTCStatus.TEST_FAILED_THIS_OPERATION_CYCLE
    # pendingDTC stays: it failed in the last completed operation cycle (ISO 14229-1 Annex D).
    assert bits & DTCStatus.PENDING_DTC
    assert bits & DTCStatus.CONFIRMED_DTC
    assert int(bits) == 0xEC


def status_bytes(memory: FaultMemory) -> tuple[int, int]:
    """The brake lamp's open circuit as MQTT (its record) and a scan tool (its stored DTC) read
    it: both must say the same."""
    (dtc,) = memory.dtcs()
    return int(memory.records[(LAMP, "open_circuit")].status_byte()), dtc.dtc_status


def test_pending_dtc_lasts_through_the_cycle_after_the_failure_and_no_longer() -> None:
    memory = FaultMemory(confirm_cycles=2, heal_cycles=3)
    feed(memory, failing(), 2)
    assert status_bytes(memory) == (0xAF, 0xAF)
    # Key-on: testFailedThisOperationCycle goes, pendingDTC stays (failed in the last cycle).
    memory.start_operation_cycle(T0)
    assert status_bytes(memory) == (0xED, 0xED)
    # A whole cycle in which the test never ran: ISO 14229-1 leaves pendingDTC as it was.
    memory.start_operation_cycle(T0)
    assert status_bytes(memory) == (0xED, 0xED)
    # A cycle in which the test ran and passed (not yet healed): still pending during it ...
    feed(memory, passing())
    assert status_bytes(memory) == (0xAC, 0xAC)
    # ... and no longer once it is completed.
    memory.start_operation_cycle(T0)
    assert status_bytes(memory) == (0xE8, 0xE8)
    assert memory.records[(LAMP, "open_circuit")].status == "confirmed"


def test_a_cycle_that_failed_once_then_passed_keeps_pending_dtc_into_the_next() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=2)
    feed(memory, failing())
    feed(memory, passing())  # healed at the next pass, in the next cycle
    memory.start_operation_cycle(T0)
    assert status_bytes(memory) == (0xEC, 0xEC)
    feed(memory, passing())
    assert memory.records == {}
    (dtc,) = memory.dtcs()
    assert dtc.dtc_status == 0x2C  # healed in this cycle: it failed in the last one
    memory.start_operation_cycle(T0)
    assert memory.dtcs()[0].dtc_status == 0x68  # confirmed, stored, untested this cycle


def test_a_pending_record_loses_pending_dtc_after_a_cycle_that_only_passed() -> None:
    # Not yet confirmed and not yet dropped by its debounce counter: the record stays (MQTT calls
    # it pending), but ISO 14229-1's pendingDTC follows operation cycles, not the debounce.
    memory = FaultMemory(confirm_cycles=3, heal_cycles=3)
    feed(memory, failing())
    assert status_bytes(memory) == (0x27, 0x27)
    memory.start_operation_cycle(T0)
    assert status_bytes(memory) == (0x65, 0x65)
    feed(memory, passing())
    assert status_bytes(memory) == (0x24, 0x24)
    memory.start_operation_cycle(T0)
    assert memory.records[(LAMP, "open_circuit")].status == "pending"
    assert status_bytes(memory) == (0x60, 0x60)
    feed(memory, failing())  # failing again sets it again at once
    assert status_bytes(memory) == (0x27, 0x27)


def test_clear_ends_pending_dtc() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=1)
    feed(memory, failing())
    memory.start_operation_cycle(T0)
    feed(memory, not_run())
    assert status_bytes(memory) == (0xED, 0xED)
    memory.clear(T0)
    assert memory.dtcs() == []
    memory.start_operation_cycle(T0)
    feed(memory, passing())
    assert memory.dtcs() == []
    # The fault comes back: a new DTC, pending from this failure only.
    feed(memory, failing())
    assert status_bytes(memory) == (0xAF, 0xAF)
    feed(memory, passing())
    memory.start_operation_cycle(T0)
    feed(memory, passing())
    memory.start_operation_cycle(T0)
    assert memory.dtcs()[0].dtc_status == 0x68


def test_consequence_is_recorded_and_updated() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=1)
    finding = Finding(
        "battery",
        Kind.BATTERY,
        SelfTestResult(Verdict.FAILED, "discharged"),
        consequence_of="alternator",
    )
    memory.update({"battery": finding}, T0)
    assert memory.records[("battery", "discharged")].consequence_of == "alternator"
    assert memory.remembered_roots() == {}
    memory.update({"battery": failing("battery", "discharged", Kind.BATTERY)}, T0)
    assert memory.records[("battery", "discharged")].consequence_of is None
    assert memory.remembered_roots() == {"battery": {"discharged"}}


@pytest.mark.parametrize("confirm", [1, 2, 5])
def test_sequence_numbers_rise_by_exactly_one(confirm: int) -> None:
    memory = FaultMemory(confirm_cycles=confirm, heal_cycles=2)
    seqs = []
    for round_ in range(5):
        for finding in [failing()] * (confirm + round_ % 2) + [passing()] * 2:
            events = memory.update({LAMP: finding}, T0)
            seqs += [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_forgetting_parts_the_car_no_longer_has() -> None:
    memory = FaultMemory(confirm_cycles=1, heal_cycles=2)
    feed(memory, failing("reverse"))
    feed(memory, failing("tail_left", "degraded"))
    feed(memory, failing("bcm", "no_response", Kind.CONTROLLER))
    # After a reload: reverse is gone, bcm is now a lamp (same id, another kind), tail_left stays.
    events = memory.forget({"tail_left": "lamp", "bcm": "lamp"}, T0 + timedelta(hours=1))
    assert [(e.type, e.component, e.failure) for e in events] == [
        ("fault_cleared", "bcm", "no_response"),
        ("fault_cleared", "reverse", "open_circuit"),
    ]
    assert [e.seq for e in events] == [7, 8]  # the sequence carries on (6 events so far)
    assert list(memory.records) == [("tail_left", "degraded")]
    assert memory.forget({"tail_left": "lamp"}, T0) == []
