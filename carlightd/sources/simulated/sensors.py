"""Sensors: seeded noise on every reading. What a broken sensor reports is each part's own
(`parts/`): LIN/CAN "signal invalid" codes, or a sense line stuck or saturated — all outside any
physically possible range, which is how the self-tests recognise them.

Each part has its own random stream derived from (seed, part id), so a part's readings do not depend
on the order in which the cycle happens to read the parts.
"""

from __future__ import annotations

import random
import zlib

# One standard deviation at noise = 1, in the sensor's own unit (typical automotive accuracy).
VOLTAGE_SIGMA_V = 0.003
CURRENT_SIGMA_REL = 0.004
CURRENT_SIGMA_A = 0.001
TEMPERATURE_SIGMA_C = 0.2
RIPPLE_SIGMA_V = 0.01
RPM_SIGMA = 5.0
DUTY_SIGMA = 0.003


def part_rng(seed: int, part_id: str) -> random.Random:
    return random.Random((seed << 32) ^ zlib.crc32(part_id.encode()))


class Noise:
    """Gaussian measurement noise for one part."""

    def __init__(self, rng: random.Random, scale: float) -> None:
        self.rng = rng
        self.scale = scale

    # Each reading draws straight from the generator: these run for every part, every cycle.
    def voltage(self, value: float) -> float:
        if not self.scale:
            return value
        return value + self.rng.gauss(0.0, VOLTAGE_SIGMA_V * self.scale)

    def current(self, value: float) -> float:
        if not self.scale:
            return value
        sigma = (abs(value) * CURRENT_SIGMA_REL + CURRENT_SIGMA_A) * self.scale
        return value + self.rng.gauss(0.0, sigma)

    def temperature(self, value: float) -> float:
        return (
            value + self.rng.gauss(0.0, TEMPERATURE_SIGMA_C * self.scale) if self.scale else value
        )

    def ripple(self, value: float) -> float:
        noisy = value + self.rng.gauss(0.0, RIPPLE_SIGMA_V * self.scale) if self.scale else value
        return max(0.0, noisy)

    def rpm(self, value: float) -> float:
        if value <= 0.0:
            return 0.0
        return (
            max(0.0, value + self.rng.gauss(0.0, RPM_SIGMA * self.scale)) if self.scale else value
        )

    def duty(self, value: float) -> float:
        noisy = value + self.rng.gauss(0.0, DUTY_SIGMA * self.scale) if self.scale else value
        return min(1.0, max(0.0, noisy))
