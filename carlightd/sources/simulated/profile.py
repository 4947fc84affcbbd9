"""The drive profile: which lamps the driver has switched on and how fast the engine turns.

A pure function of simulated time and key position, so a demo looks alive and a test can say
exactly what the car was doing at any second.

Ambient temperature (`Weather`): a base temperature (20 °C unless a test or the fidelity run sets
one within `AMBIENT_RANGE_C`, -20…+40 °C, the range of issue 13's fidelity report) plus a slow
seeded swing of ±`AMBIENT_SWING_C` over `AMBIENT_PERIOD_S` (a cloud, a tunnel, the day warming):
its phase is drawn from the seed, so it is the same for a seed and differs between seeds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from carlightd.core.domain import Ignition

ProfileName = Literal["drive", "steady"]

IDLE_RPM = 800.0  # the engine idles here (and the alternator's output curve starts here)

AMBIENT_RANGE_C = (-20.0, 40.0)
AMBIENT_SWING_C = 3.0
AMBIENT_PERIOD_S = 3600.0
_NIGHT_PERIOD_S = 240.0
_NIGHT_LENGTH_S = 150.0


@dataclass(frozen=True, slots=True)
class DriverInputs:
    engine_rpm: float
    lamps_on: frozenset[str]  # lamp functions commanded on
    ambient_c: float = 20.0  # outside air temperature


@dataclass(frozen=True, slots=True)
class Weather:
    """The ambient temperature over time: a base plus a slow seeded swing."""

    base_c: float = 20.0
    phase: float = 0.0

    def at(self, t: float) -> float:
        return self.base_c + AMBIENT_SWING_C * math.sin(
            2.0 * math.pi * t / AMBIENT_PERIOD_S + self.phase
        )


def weather(seed: int, base_c: float = 20.0) -> Weather:
    """The weather of a seeded run; ValueError naming `ambient_c` outside `AMBIENT_RANGE_C`."""
    low, high = AMBIENT_RANGE_C
    if not low <= base_c <= high:
        raise ValueError(f"ambient_c: must be within {low:g}…{high:g} °C, not {base_c!r}")
    return Weather(base_c, random.Random(f"ambient:{seed}").uniform(0.0, 2.0 * math.pi))


def _flashing(t: float) -> bool:
    """Indicators flash at 1.5 Hz; sampled once a second that is on, off, on, …"""
    return math.floor(t * 1.5) % 2 == 0


def driver_inputs(
    profile: ProfileName, t: float, ignition: Ignition, climate: Weather | None = None
) -> DriverInputs:
    ambient = (climate or Weather()).at(t)
    if ignition is Ignition.OFF:
        return DriverInputs(0.0, frozenset(), ambient)
    running = ignition is Ignition.RUN
    if profile == "steady":
        rpm = IDLE_RPM if running else 0.0
        return DriverInputs(rpm, frozenset({"headlamp", "tail", "license_plate"}), ambient)

    lamps: set[str] = set()
    night = (t % _NIGHT_PERIOD_S) < _NIGHT_LENGTH_S
    if night:
        lamps |= {"headlamp", "tail", "license_plate"}
        if 20.0 <= t % 60.0 < 35.0:
            lamps.add("high_beam")
    if (t % 11.0) < 3.0:
        lamps.add("brake")
    phase = t % 45.0
    if phase < 10.0 and _flashing(t):
        lamps.add("turn_left")
    elif 22.0 <= phase < 32.0 and _flashing(t):
        lamps.add("turn_right")
    if running and 80.0 <= t % 90.0 < 86.0:
        lamps.add("reverse")
    rpm = 0.0
    if running:
        # A gentle town drive between idle and 2,600 rpm.
        rpm = IDLE_RPM + 900.0 * (1.0 + math.sin(2.0 * math.pi * t / 50.0))
    return DriverInputs(rpm, frozenset(lamps), ambient)
