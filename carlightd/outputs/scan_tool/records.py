"""The data a UDS scan tool reads besides DTC numbers, as data: the DIDs (ReadDataByIdentifier
0x22 and the DTC snapshot record) and the extended data records (ISO 14229-1 DTCSnapshotRecord,
DTCExtDataRecord). The server encodes from these tables and the README documents from them, so
the two cannot disagree.

Every value is an unsigned big-endian integer: a physical value times `scale` plus `offset`,
rounded and clamped into the type's range less its top value, which is kept for "not available"
(all ones, as SAE J1979 and most makers do). A stock udsoncan client decodes each field with
`struct_format` as its DID codec.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from carlightd.core.diagnoser import Telemetry
from carlightd.core.domain import Ignition
from carlightd.core.memory import FreezeFrame


@dataclass(frozen=True, slots=True)
class DataField:
    """One DID's data: an unsigned integer of `struct_format`."""

    did: int
    name: str
    struct_format: str  # ">H", "B", ">L": what udsoncan takes as this DID's codec
    unit: str  # the physical unit the scaling yields
    scale: float = 1.0  # encoded = round(physical * scale + offset)
    offset: float = 0.0

    @property
    def size(self) -> int:
        return struct.calcsize(self.struct_format)

    @property
    def not_available(self) -> int:
        """All ones: the value could not be measured."""
        return (1 << (8 * self.size)) - 1

    def raw(self, value: float | None) -> int:
        """The encoded integer, `not_available` for a missing (or NaN) value."""
        if value is None or math.isnan(value):
            return self.not_available
        scaled = value * self.scale + self.offset
        if math.isinf(scaled):
            return 0 if scaled < 0 else self.not_available - 1
        return max(0, min(self.not_available - 1, round(scaled)))

    def encode(self, value: float | None) -> bytes:
        return struct.pack(self.struct_format, self.raw(value))


BUS_VOLTAGE = DataField(0x0101, "bus voltage", ">H", "mV", scale=1000.0)
BATTERY_SOC = DataField(0x0102, "battery state of charge", "B", "%")
ENGINE_SPEED = DataField(0x0103, "engine speed", ">H", "rpm")
BATTERY_TEMPERATURE = DataField(0x0104, "battery temperature", "B", "°C", offset=40.0)
IGNITION = DataField(0x0105, "ignition", "B", "0 off, 1 on, 2 run")
SNAPSHOT_TIME = DataField(0x0106, "time taken", ">L", "s since 1970-01-01 UTC")

IGNITION_CODES: Mapping[Ignition, int] = {Ignition.OFF: 0, Ignition.ON: 1, Ignition.RUN: 2}

# ReadDataByIdentifier 0xF190: the VIN, 17 ASCII characters (ISO 14229-1 Annex C).
VIN_DID = 0xF190
VIN_LENGTH = 17

# The live values 0x22 reads (besides the VIN), from the latest cycle's telemetry.
LIVE_FIELDS: tuple[DataField, ...] = (BUS_VOLTAGE, BATTERY_SOC, ENGINE_SPEED)

# DTC snapshot record 0x01: the freeze frame, taken when the DTC was first confirmed.
FREEZE_FRAME_RECORD = 0x01
SNAPSHOT_FIELDS: tuple[DataField, ...] = (
    BUS_VOLTAGE,
    BATTERY_SOC,
    ENGINE_SPEED,
    BATTERY_TEMPERATURE,
    IGNITION,
    SNAPSHOT_TIME,
)


def live_values(telemetry: Telemetry) -> dict[int, float | None]:
    """DID -> physical value of the live DIDs (None: not measured)."""
    soc = telemetry.battery_soc
    return {
        BUS_VOLTAGE.did: telemetry.bus_v,
        BATTERY_SOC.did: None if soc is None else soc * 100.0,
        ENGINE_SPEED.did: telemetry.engine_rpm,
    }


def snapshot_values(frame: FreezeFrame) -> dict[int, float | None]:
    """DID -> physical value of the freeze frame's DIDs (None: not available)."""
    at = frame.at if frame.at.tzinfo is not None else frame.at.replace(tzinfo=UTC)
    return {
        BUS_VOLTAGE.did: frame.bus_v,
        BATTERY_SOC.did: frame.battery_soc_percent,
        ENGINE_SPEED.did: frame.engine_rpm,
        BATTERY_TEMPERATURE.did: frame.temperature_c,
        IGNITION.did: IGNITION_CODES.get(frame.ignition),
        SNAPSHOT_TIME.did: (at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds(),
    }


def snapshot_record(frame: FreezeFrame) -> bytes:
    """DTCSnapshotRecordNumber, DTCSnapshotRecordNumberOfIdentifiers, then DID(2) + data for
    each field (ISO 14229-1, reportDTCSnapshotRecordByDTCNumber)."""
    values = snapshot_values(frame)
    body = b"".join(
        struct.pack(">H", field.did) + field.encode(values[field.did]) for field in SNAPSHOT_FIELDS
    )
    return bytes((FREEZE_FRAME_RECORD, len(SNAPSHOT_FIELDS))) + body


@dataclass(frozen=True, slots=True)
class ExtendedDataRecord:
    """A DTCExtDataRecord: one counter, saturating at the top of its type."""

    number: int
    name: str
    struct_format: str

    @property
    def size(self) -> int:
        return struct.calcsize(self.struct_format)

    def encode(self, count: int) -> bytes:
        top = (1 << (8 * self.size)) - 1
        return struct.pack(self.struct_format, max(0, min(top, count)))


OCCURRENCE_COUNTER = ExtendedDataRecord(0x01, "occurrence counter", "B")
AGING_COUNTER = ExtendedDataRecord(0x02, "aging counter", "B")
EXTENDED_DATA_RECORDS: tuple[ExtendedDataRecord, ...] = (OCCURRENCE_COUNTER, AGING_COUNTER)

# The record numbers that ask for every record of a DTC (ISO 14229-1).
ALL_SNAPSHOT_RECORDS = 0xFF
ALL_EXTENDED_DATA_RECORDS = 0xFF
