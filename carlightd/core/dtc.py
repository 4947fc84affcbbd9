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


class DTCEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    failure: str
    code: str = Field(pattern=r"^[PCBU][0-3][0-9A-F]{3}$")
    standard: bool  # a generic SAE J2012 code rather than one of carlightd's manufacturer range
    description: str
    lamps: tuple[WarningLamp, ...]


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
