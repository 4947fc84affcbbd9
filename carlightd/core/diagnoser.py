"""One diagnostic cycle, start to finish and pure: readings in, a `CycleReport` out.

readings ──► self-tests ──► isolation ──► fault memory ──► report
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from carlightd.core.domain import Ignition, Kind, Reading
from carlightd.core.dtc import WarningLamp, lookup
from carlightd.core.isolation import Finding, Topology, isolate
from carlightd.core.kinds import PartConfig, self_test_for
from carlightd.core.kinds.alternator import AlternatorReading
from carlightd.core.kinds.battery import BatteryReading, state_of_charge
from carlightd.core.kinds.controller import ControllerReading
from carlightd.core.memory import (
    DtcEntry,
    FaultEvent,
    FaultMemory,
    FaultRecord,
    FaultStatus,
    FreezeFrame,
    StoredDtc,
)
from carlightd.core.selftests import (
    ReadOutcome,
    SelfTest,
    Verdict,
    as_reading,
    common_cause_tests,
)

ComponentStatus = Literal["ok", "pending", "failed", "untested"]


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class ComponentState:
    component: str
    kind: Kind
    status: ComponentStatus
    failure: str | None
    dtc: str | None
    dtc_status: int | None  # the ISO 14229 status byte of that DTC
    reason: str | None  # why untested, or what a failure was judged on
    reading: Reading | None
    consequence_of: str | None


@dataclass(frozen=True, slots=True)
class Fault:
    component: str
    kind: Kind
    failure: str
    dtc: str
    status: FaultStatus
    since: datetime
    description: str
    consequence_of: str | None
    occurrences: int = 0  # times confirmed since the last clear
    freeze_frame: FreezeFrame | None = None  # None while pending


@dataclass(frozen=True, slots=True)
class Telemetry:
    ignition: Ignition
    engine_rpm: float | None
    bus_v: float | None
    battery: BatteryReading | None
    alternator: AlternatorReading | None
    battery_soc: float | None  # estimated from the battery test's open-circuit voltage, 0..1


@dataclass(frozen=True, slots=True)
class CycleReport:
    cycle: int
    at: datetime
    components: dict[str, ComponentState]
    faults: list[Fault]
    warning_lamps: dict[WarningLamp, bool]
    events: list[FaultEvent]
    telemetry: Telemetry
    dtcs: list[StoredDtc] = field(default_factory=list)  # the whole fault memory, sorted

    def root_causes(self) -> dict[str, str]:
        """part -> failure for every fault that is nobody's consequence."""
        return {f.component: f.failure for f in self.faults if f.consequence_of is None}


def _freeze_frame(telemetry: Telemetry, now: datetime) -> FreezeFrame:
    battery = telemetry.battery
    soc = telemetry.battery_soc
    return FreezeFrame(
        at=now,
        ignition=telemetry.ignition,
        engine_rpm=telemetry.engine_rpm,
        bus_v=telemetry.bus_v,
        battery_soc_percent=None if soc is None else round(soc * 100, 1),
        temperature_c=battery.temperature_c if battery else None,
    )


def _fault(record: FaultRecord, entry: DtcEntry | None) -> Fault:
    confirmed = record.status == "confirmed" and entry is not None
    return Fault(
        record.component,
        record.kind,
        record.failure,
        record.dtc,
        record.status,
        record.since,
        record.description,
        record.consequence_of,
        entry.occurrences if entry is not None else 0,
        entry.freeze_frame if confirmed and entry is not None else None,
    )


def _component_state(
    finding: Finding, reading: Reading | None, records: list[FaultRecord]
) -> ComponentState:
    result = finding.result
    if not records:  # the common case: nothing remembered about this part
        status: ComponentStatus = "untested" if result.verdict is Verdict.NOT_RUN else "ok"
        return ComponentState(
            finding.part_id, finding.kind, status, None, None, None, result.reason, reading, None
        )
    # The record that speaks for the part: the one failing now, else the most serious remembered.
    current = [r for r in records if r.failure == result.failure]
    remembered = sorted(records, key=lambda r: r.status != "confirmed")
    record = (current or remembered)[0]
    entry = lookup(record.kind, record.failure)
    return ComponentState(
        finding.part_id,
        finding.kind,
        "failed" if record.status == "confirmed" else "pending",
        record.failure,
        entry.code,
        int(record.status_byte()),
        result.reason,
        reading,
        record.consequence_of,
    )


def _telemetry(ignition: Ignition, readings: Mapping[str, ReadOutcome]) -> Telemetry:
    battery = next((r for r in readings.values() if isinstance(r, BatteryReading)), None)
    alternator = next((r for r in readings.values() if isinstance(r, AlternatorReading)), None)
    controller = next((r for r in readings.values() if isinstance(r, ControllerReading)), None)
    bus_v = controller.supply_v if controller else (battery.voltage_v if battery else None)
    rpm = alternator.engine_rpm if alternator else None
    soc = state_of_charge(battery) if battery else None
    return Telemetry(ignition, rpm, bus_v, battery, alternator, soc)


class Diagnoser:
    """Holds what persists between cycles: the self-tests, the topology and the fault memory.

    Given the configured parts and a fault memory (which holds the debounce numbers), never the
    whole configuration: the core does not know the configuration loader."""

    def __init__(self, components: Sequence[PartConfig], memory: FaultMemory) -> None:
        self.tests: dict[str, SelfTest] = {c.id: self_test_for(c) for c in components}
        self._common_causes = common_cause_tests(self.tests)
        self.topology = Topology(components)
        self.memory = memory
        self.cycle = 0
        self._carried: list[FaultEvent] = []  # events to hand on with the next report
        self._last_ignition: Ignition | None = None
        self._last: tuple[Ignition, dict[str, Finding], Mapping[str, ReadOutcome]] = (
            Ignition.OFF,
            {},
            {},
        )

    def diagnose(
        self, ignition: Ignition, readings: Mapping[str, ReadOutcome], now: datetime
    ) -> CycleReport:
        if ignition is not Ignition.OFF and self._last_ignition in (Ignition.OFF, None):
            self._carried += self.memory.start_operation_cycle(now)
        self._last_ignition = ignition
        self.cycle += 1
        results = {
            part_id: test.assess(readings[part_id], ignition)
            for part_id, test in self.tests.items()
        }
        for part_id, common in self._common_causes.items():  # fuses and grounds, from their lamps
            results[part_id] = common.judge(results[part_id], results, self.tests)
        findings = isolate(results, self.topology, self.memory.remembered_roots())
        frame = _freeze_frame(_telemetry(ignition, readings), now)
        events = self._carried + self.memory.update(findings, now, frame)
        self._carried = []
        self._last = (ignition, findings, readings)
        return self._report(events, now)

    def replace_parts(self, components: Sequence[PartConfig], now: datetime) -> None:
        """The car's parts changed (a reload): new tests and topology; what is remembered of a part
        that is gone (or is now another kind of part) is cleared, and the next report says so."""
        self.tests = {c.id: self_test_for(c) for c in components}
        self._common_causes = common_cause_tests(self.tests)
        self.topology = Topology(components)
        self._carried += self.memory.forget({c.id: c.kind for c in components}, now)

    def clear(self, now: datetime) -> CycleReport:
        """Clear the fault memory (a scan tool's command); the report carries the events."""
        events = self.memory.clear(now)
        return self._report(events, now)

    def _report(self, events: list[FaultEvent], now: datetime) -> CycleReport:
        ignition, findings, readings = self._last
        by_part: dict[str, list[FaultRecord]] = {}
        for record in self.memory.records.values():
            by_part.setdefault(record.component, []).append(record)
        components = {
            part_id: _component_state(
                finding, as_reading(readings[part_id]), by_part.get(part_id, [])
            )
            for part_id, finding in findings.items()
        }
        return CycleReport(
            cycle=self.cycle,
            at=now,
            components=components,
            faults=[
                _fault(r, self.memory.stored.get((r.component, r.failure)))
                for r in self.memory.faults()
            ],
            warning_lamps=self.memory.warning_lamps(),
            events=events,
            telemetry=_telemetry(ignition, readings),
            dtcs=self.memory.dtcs(),
        )
