"""The series path of each lamp circuit: the fuses that feed it and the ground points it returns
through, as the configuration names them (a fuse's `feeds`, a ground's `serves`).

A lamp asks its `Feed` on every draw and measurement, so a fuse blowing or a ground corroding acts
on the lamps at once, without the lamps being told: `live` is False while any of its fuses is
blown (the circuit is open), `series_ohm` is the resistance its ground points add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from carlightd.core.domain import Kind
from carlightd.core.kinds import KINDS, PartConfig
from carlightd.sources.simulated.parts.fuse import Fuse
from carlightd.sources.simulated.parts.ground import Ground

_BISECTIONS = 40  # 25 A / 2**40: far below the sense's noise


class Feed:
    __slots__ = ("fuses", "grounds")

    def __init__(self, fuses: Sequence[Fuse] = (), grounds: Sequence[Ground] = ()) -> None:
        self.fuses = tuple(fuses)
        self.grounds = tuple(grounds)

    @property
    def live(self) -> bool:
        return not any(fuse.blown for fuse in self.fuses)

    @property
    def series_ohm(self) -> float:
        return sum(ground.added_ohm for ground in self.grounds)

    def conductance(self, lamp_s: float) -> float:
        """What a filament of `lamp_s` siemens draws through it, as the bus sees it."""
        if not self.live:
            return 0.0
        return lamp_s / (1.0 + lamp_s * self.series_ohm)

    def current(self, current_at: Callable[[float], float], supply_v: float) -> float:
        """The current of a lamp drawing `current_at(v)` at v volts across it, fed at `supply_v`
        through this path: the I with I = current_at(supply_v - I * series_ohm). Every lamp's
        current rises with its voltage, so that I is unique; bisection finds it to well under a
        microampere (a filament alone has a closed form, an LED driver near drop-out has not)."""
        if not self.live:
            return 0.0
        series_ohm = self.series_ohm
        if not series_ohm:
            return current_at(supply_v)
        low, high = 0.0, current_at(supply_v)
        for _ in range(_BISECTIONS):
            middle = (low + high) / 2.0
            if current_at(supply_v - middle * series_ohm) > middle:
                low = middle
            else:
                high = middle
        return (low + high) / 2.0


DIRECT = Feed()  # a circuit with no fuse or ground point configured: straight from the bus


def feeds(components: Sequence[PartConfig], parts: Mapping[str, object]) -> dict[str, Feed]:
    """part id -> its Feed, for every part a fuse or a ground point names."""
    fuses: dict[str, list[Fuse]] = {}
    grounds: dict[str, list[Ground]] = {}
    for component in components:
        part = parts[component.id]
        for dependent in KINDS[Kind(component.kind)].dependents(component):
            if isinstance(part, Fuse):
                fuses.setdefault(dependent, []).append(part)
            elif isinstance(part, Ground):
                grounds.setdefault(dependent, []).append(part)
    return {
        part_id: Feed(fuses.get(part_id, ()), grounds.get(part_id, ()))
        for part_id in {*fuses, *grounds}
    }
