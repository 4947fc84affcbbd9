"""A fault memory for the transports' tests: one confirmed open brake lamp (B1200-13, no freeze
frame), served through a `ScanToolLink` whose clear empties it, as `clear_faults` does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from carlightd.core.domain import Kind
from carlightd.core.dtc import DTCStatus, lookup
from carlightd.core.memory import StoredDtc
from carlightd.outputs.scan_tool.view import ScanToolLink, VehicleView, supported_entries

BRAKE_OPEN = lookup(Kind.LAMP, "open_circuit")
CONFIRMED = int(
    DTCStatus.TEST_FAILED
    | DTCStatus.TEST_FAILED_THIS_OPERATION_CYCLE
    | DTCStatus.CONFIRMED_DTC
    | DTCStatus.TEST_FAILED_SINCE_LAST_CLEAR
)


@dataclass
class BrakeLampMemory:
    """A car with a confirmed open brake lamp; its clear empties the memory, as clear_faults."""

    vin: str
    clears: int = 0

    def __post_init__(self) -> None:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        self.dtcs: tuple[StoredDtc, ...] = (
            StoredDtc(
                component="brake_left",
                kind=Kind.LAMP,
                failure="open_circuit",
                dtc=BRAKE_OPEN.code,
                dtc_status=CONFIRMED,
                occurrences=1,
                aging_counter=0,
                first_failed=at,
                last_failed=at,
                freeze_frame=None,
            ),
        )

    def view(self) -> VehicleView:
        return VehicleView(vin=self.vin, supported=supported_entries({Kind.LAMP}), dtcs=self.dtcs)

    async def clear(self) -> int:
        self.clears += 1
        cleared, self.dtcs = len(self.dtcs), ()
        return cleared

    def link(self) -> ScanToolLink:
        return ScanToolLink(view=self.view, clear=self.clear)
