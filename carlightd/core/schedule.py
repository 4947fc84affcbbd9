"""When the next cycle is due: a fixed grid on the monotonic clock, so delays never become drift.

Cycle n is due at origin + n·period. A cycle that finishes after its successor's tick skips the
ticks it missed (it does not run them in a burst) and reports how many, so the loop can log it
and withhold the watchdog ping. Pure arithmetic on the times it is given: no clock, no sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    due: float  # when the next cycle starts
    missed: int  # ticks skipped because the cycle that just ended ran past them
    late_s: float  # how far past its own deadline that cycle ended (0 when on time)

    @property
    def on_time(self) -> bool:
        return self.missed == 0


class Schedule:
    def __init__(self, origin: float, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.origin = origin
        self.period_s = period_s
        self.tick = 0

    def next_slot(self, now: float) -> Slot:
        """A cycle ended at `now`: when does the next one start?"""
        self.tick += 1
        deadline = self.origin + self.tick * self.period_s
        if now <= deadline:
            return Slot(due=deadline, missed=0, late_s=0.0)
        missed = math.floor((now - deadline) / self.period_s) + 1
        self.tick += missed
        return Slot(
            due=self.origin + self.tick * self.period_s, missed=missed, late_s=now - deadline
        )

    def restart(self, now: float, period_s: float) -> Slot:
        """A new period (a reload): a fresh grid whose first tick is one new period from now."""
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.origin, self.period_s, self.tick = now, period_s, 1
        return Slot(due=now + period_s, missed=0, late_s=0.0)
