"""The vocabulary shared by the simulated car and the diagnostics: the part kinds, key positions,
and what a reading is. What each kind can fail with and what its sensors report is in its module
in `carlightd.core.kinds`.

The diagnostics never look inside the simulation; they see only these readings, exactly as they
would on a real car. That boundary is what keeps the self-tests honest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from carlightd.errors import CarlightdError


class Kind(StrEnum):
    LAMP = "lamp"
    BATTERY = "battery"
    ALTERNATOR = "alternator"
    CONTROLLER = "controller"
    FUSE = "fuse"
    GROUND = "ground"


class Ignition(StrEnum):
    OFF = "off"
    ON = "on"
    RUN = "run"  # the engine runs


SENSOR_FAULT = "sensor_fault"


class UnknownFailureError(CarlightdError, ValueError):
    """A failure mode that the part's kind cannot have."""

    def __init__(self, kind: Kind, failure: str, allowed: tuple[str, ...] = ()) -> None:
        # The kind's failures come from its module (`carlightd.core.kinds.check_failure`).
        expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        super().__init__(f"a {kind} cannot have failure {failure!r}{expected}")
        self.kind = kind
        self.failure = failure


# Slotted and not frozen, as every kind's reading: one is built for every part on every cycle.
@dataclass(slots=True)
class Reading:
    """What one part's sensors report; each kind's reading (in `carlightd.core.kinds`) derives
    from it."""


def reading_as_dict(reading: Reading) -> dict[str, Any]:
    """Readings rounded for people and payloads; the noise floor is well above a millivolt."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(reading):
        value = getattr(reading, field.name)
        out[field.name] = round(value, 3) if isinstance(value, float) else value
    return out
