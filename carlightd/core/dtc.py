"""The DTC catalogue (kept as data in dtc_catalogue.toml) and the ISO 14229 DTC status bits."""

from __future__ import annotations

import tomllib
from enum import IntFlag
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from carlightd.core.domain import Kind
from carlightd.core.kinds import FAILURES
from carlightd.errors import CarlightdError

WarningLamp = Literal["bulb", "battery", "check_engine"]
WARNING_LAMPS: tuple[WarningLamp, ...] = ("bulb", "battery", "check_engine")


# The SAE J2012-DA failure-type bytes the catalogue uses (the third byte of a UDS DTC).
FAILURE_TYPES: dict[int, str] = {
    0x11: "circuit short to ground",
    0x13: "circuit open",
    0x16: "circuit voltage below threshold",
    0x17: "circuit voltage above threshold",
    0x18: "circuit current below threshold",
    0x1E: "circuit resistance out of range",
    0x64: "signal plausibility failure",
    0x87: "missing message",
    0x92: "performance or incorrect operation",
    0x96: "component internal failure",
}

# The first letter of a J2012 code is the top two bits of its first byte.
_SYSTEMS = "PCBU"


class DTCEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    failure: str
    code: str = Field(pattern=r"^[PCBU][0-3][0-9A-F]{3}$")
    failure_type: int = Field(ge=0, le=0xFF)
    # Reported to OBD-II tools (modes 03 and 07) as well as over UDS.
    emission_related: bool
    standard: bool  # a generic SAE J2012 code rather than one of carlightd's manufacturer range
    description: str
    lamps: tuple[WarningLamp, ...]

    @property
    def obd_code(self) -> int:
        """The two-byte SAE J2012 encoding, as OBD-II modes 03 and 07 send it."""
        return encode_j2012(self.code)

    @property
    def uds_code(self) -> int:
        """The three-byte ISO 14229-1 DTC: the J2012 code and the failure-type byte."""
        return self.obd_code << 8 | self.failure_type


def encode_j2012(code: str) -> int:
    """`B1200` -> 0x9200: two bits for the system letter, two for the first digit, then the three
    hexadecimal digits (SAE J2012 / ISO 15031-6)."""
    return _SYSTEMS.index(code[0]) << 14 | int(code[1]) << 12 | int(code[2:], 16)


def decode_j2012(value: int) -> str:
    """0x9200 -> `B1200`; the inverse of `encode_j2012` for any 16-bit value."""
    return f"{_SYSTEMS[value >> 14 & 0x3]}{value >> 12 & 0x3}{value & 0xFFF:03X}"


class DTCStatus(IntFlag):
    """The DTC status byte of ISO 14229-1 (UDS), bit for bit."""

    TEST_FAILED = 0x01
    TEST_FAILED_THIS_OPERATION_CYCLE = 0x02
    PENDING_DTC = 0x04
    CONFIRMED_DTC = 0x08
    TEST_NOT_COMPLETED_SINCE_LAST_CLEAR = 0x10
    TEST_FAILED_SINCE_LAST_CLEAR = 0x20
    TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE = 0x40
    WARNING_INDICATOR_REQUESTED = 0x80


class CatalogueError(CarlightdError, ValueError):
    pass


def parse_catalogue(text: str) -> dict[tuple[Kind, str], DTCEntry]:
    """Validate a catalogue: every failure of every kind has exactly one code, codes are unique."""
    entries = TypeAdapter(list[DTCEntry]).validate_python(tomllib.loads(text).get("dtc", []))
    table: dict[tuple[Kind, str], DTCEntry] = {}
    for entry in entries:
        key = (entry.kind, entry.failure)
        if entry.failure not in FAILURES[entry.kind]:
            raise CatalogueError(f"{entry.code}: a {entry.kind} has no failure {entry.failure!r}")
        if key in table:
            raise CatalogueError(f"{entry.kind}/{entry.failure} has two codes")
        if "check_engine" in entry.lamps and not entry.emission_related:
            raise CatalogueError(
                f"{entry.code} lights check_engine (the OBD-II MIL) but is not emission_related: "
                "an OBD-II tool would see the MIL on and no code"
            )
        if entry.failure_type not in FAILURE_TYPES:
            raise CatalogueError(
                f"{entry.code}: failure_type {entry.failure_type:#04x} is not in FAILURE_TYPES"
            )
        table[key] = entry
    missing = [f"{k}/{f}" for k, fs in FAILURES.items() for f in fs if (k, f) not in table]
    if missing:
        raise CatalogueError(f"no DTC for: {', '.join(missing)}")
    codes = [entry.code for entry in entries]
    if len(set(codes)) != len(codes):
        raise CatalogueError("a code is used twice")
    return table


@cache
def catalogue() -> dict[tuple[Kind, str], DTCEntry]:
    text = (resources.files("carlightd.core") / "dtc_catalogue.toml").read_text("utf-8")
    return parse_catalogue(text)


def lookup(kind: Kind, failure: str) -> DTCEntry:
    return catalogue()[(kind, failure)]


@cache
def by_uds_code() -> dict[int, DTCEntry]:
    """The catalogue keyed by the three-byte DTC a scan tool sends."""
    return {entry.uds_code: entry for entry in catalogue().values()}
