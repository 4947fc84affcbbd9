"""The MQTT contract v1 (DESIGN §5): topics and every payload, as pydantic models.

These models are the contract: field names and meanings are a promise to subscribers. Extend them
only compatibly (new optional fields) and document every extension in the README.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from carlightd.core.diagnoser import ComponentState, CycleReport, Fault
from carlightd.core.domain import Ignition, reading_as_dict
from carlightd.core.memory import MAX_SEQ, FaultEvent, StoredDtc

ONLINE = b"online"
OFFLINE = b"offline"


def payload_bytes(payload: Any) -> bytes:
    """An incoming message's payload as bytes, whatever paho handed over."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class Topics:
    """`ROOT` is `{base_topic}/{vehicle_id}`."""

    def __init__(self, base_topic: str, vehicle_id: str) -> None:
        self.root = f"{base_topic}/{vehicle_id}"
        self.availability = f"{self.root}/availability"
        self.faults = f"{self.root}/faults"
        self.dtcs = f"{self.root}/dtcs"
        self.events = f"{self.root}/events"
        self.telemetry = f"{self.root}/telemetry"
        self.requests = f"{self.root}/request/+"
        self.status = f"{self.root}/status"

    def component(self, part_id: str) -> str:
        return f"{self.root}/components/{part_id}"

    def request(self, command: str) -> str:
        return f"{self.root}/request/{command}"

    def response(self, command: str) -> str:
        return f"{self.root}/response/{command}"

    def command_of(self, request_topic: str) -> str | None:
        prefix = f"{self.root}/request/"
        return request_topic[len(prefix) :] if request_topic.startswith(prefix) else None


class _Payload(BaseModel):
    # from_attributes: the core's dataclasses of the same shape convert field for field.
    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


FREEZE_FRAME_DIGITS = {"engine_rpm": 0, "bus_v": 3, "battery_soc_percent": 1, "temperature_c": 1}


class FreezeFramePayload(_Payload):
    """FREEZE_FRAME (v1.1): the conditions when a DTC was confirmed (ISO 14229 snapshot data)."""

    at: datetime
    ignition: Ignition
    engine_rpm: float | None
    bus_v: float | None
    battery_soc_percent: float | None
    temperature_c: float | None

    @field_validator("engine_rpm", "bus_v", "battery_soc_percent", "temperature_c")
    @classmethod
    def _rounded(cls, value: float | None, info: ValidationInfo) -> float | None:
        # To what the sensors resolve, as telemetry has them: not 797.3473548440793 rpm.
        digits = FREEZE_FRAME_DIGITS[str(info.field_name)]
        return None if value is None or not math.isfinite(value) else round(value, digits)


class FaultPayload(_Payload):
    component: str
    kind: str
    failure: str
    dtc: str
    status: Literal["pending", "confirmed"]
    since: datetime
    description: str
    consequence_of: str | None = Field(description="null, or the root-cause component")
    # v1.1; defaults keep a v1 fault list (without them) valid for the consumers.
    occurrences: int = Field(
        default=0,
        ge=0,
        le=MAX_SEQ,
        description="times confirmed since the memory was last cleared (v1.1)",
    )
    freeze_frame: FreezeFramePayload | None = Field(
        default=None, description="taken when it was confirmed; null while pending (v1.1)"
    )

    @classmethod
    def of(cls, fault: Fault) -> FaultPayload:
        return cls.model_validate(fault)


class WarningLamps(_Payload):
    bulb: bool
    battery: bool
    check_engine: bool


class FaultsPayload(_Payload):
    """`ROOT/faults`, retained: the one place that says which part failed."""

    vehicle: str
    updated_at: datetime
    warning_lamps: WarningLamps
    faults: list[FaultPayload]

    @classmethod
    def of(cls, vehicle: str, report: CycleReport) -> FaultsPayload:
        return cls(
            vehicle=vehicle,
            updated_at=report.at,
            warning_lamps=WarningLamps(**report.warning_lamps),
            faults=[FaultPayload.of(f) for f in report.faults],
        )


class DtcPayload(_Payload):
    """DTC (v1.1): one entry of the fault memory as a scan tool reads it; it stays stored after
    its fault heals, until it ages out (`dtc_aged`) or the memory is cleared."""

    component: str
    kind: str
    failure: str
    dtc: str
    dtc_status: int = Field(ge=0, le=255, description="ISO 14229 DTC status byte")
    occurrences: int = Field(
        ge=0, le=MAX_SEQ, description="times confirmed since the memory was last cleared"
    )
    aging_counter: int = Field(
        ge=0, le=MAX_SEQ, description="operation cycles without failing since it last failed"
    )
    first_failed: datetime
    last_failed: datetime
    freeze_frame: FreezeFramePayload | None = Field(description="taken when it was confirmed")

    @classmethod
    def of(cls, dtc: StoredDtc) -> DtcPayload:
        return cls.model_validate(dtc)


# The bits of the ISO 14229 status byte a reader looks for first, in the words the views use.
DTC_STATUS_WORDS = ((0x08, "confirmed"), (0x04, "pending"), (0x01, "failing"), (0x80, "lamp"))


def dtc_status_text(status: int) -> str:
    """`0x2f confirmed, pending, failing`: the byte, then what its main bits say."""
    words = [word for bit, word in DTC_STATUS_WORDS if status & bit]
    return f"0x{status:02x}" + (f" {', '.join(words)}" if words else "")


class DtcsPayload(_Payload):
    """`ROOT/dtcs`, retained (v1.1): the whole fault memory, sorted by part then failure."""

    vehicle: str
    updated_at: datetime
    dtcs: list[DtcPayload]

    @classmethod
    def of(cls, vehicle: str, report: CycleReport) -> DtcsPayload:
        return cls(
            vehicle=vehicle, updated_at=report.at, dtcs=[DtcPayload.of(d) for d in report.dtcs]
        )


class ComponentPayload(_Payload):
    """`ROOT/components/{component}`, retained."""

    component: str
    kind: str
    status: Literal["ok", "pending", "failed", "untested"]
    failure: str | None
    dtc: str | None
    dtc_status: int | None = Field(description="ISO 14229 DTC status byte, or null")
    reason: str | None = Field(description="why untested, or what a failure was judged on")
    reading: dict[str, Any] | None
    updated_at: datetime

    @classmethod
    def of(cls, state: ComponentState, at: datetime) -> ComponentPayload:
        return cls(
            component=state.component,
            kind=str(state.kind),
            status=state.status,
            failure=state.failure,
            dtc=state.dtc,
            dtc_status=state.dtc_status,
            reason=state.reason,
            reading=None if state.reading is None else reading_as_dict(state.reading),
            updated_at=at,
        )


class EventPayload(_Payload):
    """`ROOT/events`: `seq` rises by exactly one per event, across restarts."""

    seq: int
    type: Literal["fault_pending", "fault_confirmed", "fault_cleared", "dtc_aged"]
    component: str
    kind: str
    failure: str
    dtc: str
    at: datetime

    @classmethod
    def of(cls, event: FaultEvent) -> EventPayload:
        return cls.model_validate(event)


class TelemetryPayload(_Payload):
    """`ROOT/telemetry`, every `telemetry_s`."""

    vehicle: str
    at: datetime
    ignition: Ignition
    engine_rpm: float | None
    bus_v: float | None
    battery: dict[str, Any] | None
    alternator: dict[str, Any] | None
    battery_soc_percent: float | None = Field(
        default=None, description="state of charge estimated from the battery test (extension)"
    )
    temperature_c: float | None = Field(
        default=None, description="battery temperature from the battery sensor, °C (extension)"
    )
    setpoint_v: float | None = Field(
        default=None,
        description="charging set-point the engine computer commands the alternator, V (extension)",
    )

    @classmethod
    def of(cls, vehicle: str, report: CycleReport) -> TelemetryPayload:
        telemetry = report.telemetry
        return cls(
            vehicle=vehicle,
            at=report.at,
            ignition=telemetry.ignition,
            engine_rpm=None if telemetry.engine_rpm is None else round(telemetry.engine_rpm),
            bus_v=None if telemetry.bus_v is None else round(telemetry.bus_v, 3),
            battery=None if telemetry.battery is None else reading_as_dict(telemetry.battery),
            alternator=(
                None if telemetry.alternator is None else reading_as_dict(telemetry.alternator)
            ),
            battery_soc_percent=(
                None if telemetry.battery_soc is None else round(telemetry.battery_soc * 100, 1)
            ),
            temperature_c=(
                None if telemetry.battery is None else round(telemetry.battery.temperature_c, 1)
            ),
            setpoint_v=(
                None
                if telemetry.alternator is None or telemetry.alternator.setpoint_v is None
                else round(telemetry.alternator.setpoint_v, 3)
            ),
        )


Transaction = str | int | None


class OkResponse(_Payload):
    status: Literal["ok"] = "ok"
    data: dict[str, Any]
    transaction: Transaction = None


class ErrorResponse(_Payload):
    status: Literal["error"] = "error"
    error: str
    transaction: Transaction = None


# A high-water mark read back from the broker is believed up to here only: a car making 1,000
# events a second for a century stays far below, and a forged mark cannot bring the sequence near
# MAX_SEQ.
MAX_BROKER_SEQ = 2**48
# ROOT/status is a few hundred bytes; a bigger one is not ours and is not even parsed.
MAX_STATUS_BYTES = 16_384


class StatusPayload(_Payload):
    """`ROOT/status` (retained; an extension of contract v1.1): how the daemon itself is doing.

    `problems` names what is wrong with the daemon (not the car): state that cannot be saved
    (then `state_saved` is false), a scan-tool interface that cannot start. `last_event_seq` is
    the highest event `seq` handed out; it reaches the broker before any event numbered up to
    it, and a daemon that restarts with an older state file (a full disk, a deleted file)
    continues above it, so no `seq` is ever reused. `instance` tells two daemons that claim the
    same car apart.
    """

    vehicle: str
    updated_at: AwareDatetime
    instance: str = Field(description="host:pid:nonce of the daemon that published this")
    started_at: AwareDatetime
    state_saved: bool = Field(description="false while the fault memory cannot be saved")
    problems: list[str] = Field(description="what is wrong with the daemon itself; [] when fine")
    last_event_seq: int = Field(ge=0, le=MAX_SEQ)
