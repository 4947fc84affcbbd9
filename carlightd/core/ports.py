"""The seams of the data path (DESIGN §1), as protocols: what the loop needs of a source, and what
a command may do to the car. Implementations live in `sources/` (the simulated car; a CAN bus
later); the core and the outputs depend only on these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from carlightd.core.domain import Ignition
from carlightd.core.selftests import ReadOutcome


class Source(Protocol):
    """Where readings come from. A source knows nothing of diagnosis.

    `read_all` never stalls and never raises for a part: a read that is late or broken comes back
    as NO_READING, and the cycle carries on.
    """

    @property
    def ignition(self) -> Ignition: ...

    def advance(self, dt_s: float) -> None:
        """Time passes (a real source ignores it: its time passes by itself)."""

    async def read_all(
        self, part_ids: Iterable[str], timeout_s: float
    ) -> Mapping[str, ReadOutcome]: ...


class Workshop(Protocol):
    """What commands (MQTT today, a scan tool next) may do to the car and its fault memory.

    Unknown parts raise `carlightd.errors.UnknownPartError`; a failure a part's kind cannot have
    raises `carlightd.core.domain.UnknownFailureError`.
    """

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        """Break a part besides what is broken in it already: in every cycle, or in a fraction
        `intermittent` (0 < p < 1) of them."""
        ...

    def repair(self, part_id: str) -> None: ...

    def set_ignition(self, ignition: Ignition) -> None: ...

    async def clear_faults(self) -> int:
        """Clear the fault memory now; returns how many faults were cleared."""
        ...
