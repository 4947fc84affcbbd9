"""What every scan-tool protocol answers from, and the one thing it may do to the car.

The loop hands each cycle's report to the output, which keeps a `VehicleView` of it: immutable,
replaced whole, so a request is answered from one consistent cycle whichever transport it came on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from carlightd.core.diagnoser import CycleReport, Telemetry
from carlightd.core.domain import Kind
from carlightd.core.dtc import DTCEntry, WarningLamp, catalogue
from carlightd.core.memory import StoredDtc


@dataclass(frozen=True, slots=True)
class VehicleView:
    """The car as a scan tool sees it at one cycle."""

    vin: str
    # The catalogue entries of the kinds this car has: what 0x19 0x0A reports as supported.
    supported: tuple[DTCEntry, ...]
    # The whole fault memory (stored DTCs, active or healed), as ROOT/dtcs publishes it.
    dtcs: tuple[StoredDtc, ...] = ()
    # None until the first cycle: values a scan tool asks for are then not available.
    telemetry: Telemetry | None = None
    warning_lamps: Mapping[WarningLamp, bool] = field(default_factory=lambda: MappingProxyType({}))


def supported_entries(kinds: set[Kind]) -> tuple[DTCEntry, ...]:
    """The catalogue entries of these kinds, in catalogue order."""
    return tuple(entry for entry in catalogue().values() if entry.kind in kinds)


def view_of(report: CycleReport, vin: str, supported: tuple[DTCEntry, ...]) -> VehicleView:
    return VehicleView(
        vin=vin,
        supported=supported,
        dtcs=tuple(report.dtcs),
        telemetry=report.telemetry,
        warning_lamps=MappingProxyType(dict(report.warning_lamps)),
    )


@dataclass(frozen=True, slots=True)
class ScanToolLink:
    """What a protocol handler is given: the latest view, and the fault-memory clear (the same
    act as the `clear_faults` command: same events, same saved state, seen on MQTT). `clear`
    returns how many faults it cleared."""

    view: Callable[[], VehicleView]
    clear: Callable[[], Awaitable[int]]
