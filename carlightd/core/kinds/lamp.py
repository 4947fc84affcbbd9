"""The lamp: one lamp circuit, switched and measured by a body controller.

Here: its configuration, its reading, its failures, its self-test and what it depends on. Its DTCs
are the `kind = "lamp"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated lamp is
`carlightd/sources/simulated/parts/lamp.py` (the core never imports a source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import Identifier, IdsByKind, KindSpec, PartConfig
from carlightd.core.selftests import (
    IGNITION_OFF,
    NO_ANSWER,
    PASSED,
    ReadOutcome,
    SelfTestResult,
    fail,
    not_run,
)

# Specifications both the car and its diagnostics know, as a workshop manual would state them.
RATED_LAMP_V = 13.2  # 12 V bulbs are rated at 13.2 V (ECE R37)
LED_DROPOUT_V = 9.0  # LED lamp drivers stop regulating below this supply

LampFunction = Literal[
    "headlamp", "high_beam", "tail", "brake", "turn_left", "turn_right", "reverse", "license_plate"
]


class LampConfig(PartConfig):
    kind: Literal["lamp"]
    function: LampFunction
    technology: Literal["incandescent", "led"] = "incandescent"
    # Below 2 W a lamp draws so little that sense noise could pass for a dim lamp.
    power_w: float = Field(ge=2.0, le=200.0)
    controller: Identifier = "bcm"


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class LampReading(Reading):
    """What the body controller measures on one lamp circuit.

    A lamp that is switched off is measured during a short test pulse (`pulsed`), as real
    controllers do, so a dead bulb is found before the driver needs it.
    """

    commanded_on: bool
    pulsed: bool
    supply_v: float
    current_a: float
    overcurrent: bool  # the high-side driver tripped


FAILURES = ("open_circuit", "short_circuit", "degraded", SENSOR_FAULT)

# Thresholds, each several noise standard deviations away from any healthy reading (README).
LAMP_SENSE_RANGE_A = (-0.3, 25.0)
LAMP_MIN_JUDGING_V = LED_DROPOUT_V + 0.5
LAMP_OPEN_RATIO = 0.15
LAMP_DEGRADED_RATIO = 0.8
LAMP_SHORT_RATIO = 1.6


class LampTest:
    """Lamp: the circuit's current must match what the lamp draws at the measured supply voltage.

    Judging at the measured voltage is what keeps a flat battery from being blamed on the lamps.
    """

    kind = Kind.LAMP

    def __init__(self, config: LampConfig) -> None:
        self.is_led = config.technology == "led"
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.resistance = RATED_LAMP_V**2 / config.power_w

    def expected_a(self, supply_v: float) -> float:
        return self.led_current_a if self.is_led else supply_v / self.resistance

    def assess(self, reading: ReadOutcome, ignition: Ignition) -> SelfTestResult:
        if ignition is Ignition.OFF:
            return IGNITION_OFF
        if not isinstance(reading, LampReading):
            return NO_ANSWER
        low, high = LAMP_SENSE_RANGE_A
        if not low <= reading.current_a <= high:
            return fail(SENSOR_FAULT, f"current sense reads {reading.current_a:.2f} A")
        if reading.overcurrent:
            return fail("short_circuit", "driver tripped on overcurrent")
        if reading.supply_v < LAMP_MIN_JUDGING_V:
            return not_run(f"supply voltage too low to judge ({reading.supply_v:.2f} V)")
        ratio = reading.current_a / self.expected_a(reading.supply_v)
        judged = f"{ratio:.0%} of expected current at {reading.supply_v:.2f} V"
        if ratio < LAMP_OPEN_RATIO:
            return fail("open_circuit", judged)
        if ratio < LAMP_DEGRADED_RATIO:
            return fail("degraded", judged)
        if ratio > LAMP_SHORT_RATIO:
            return fail("short_circuit", judged)
        return PASSED


def _controller(config: LampConfig) -> str:
    return config.controller


def _depends_on(config: LampConfig, ids: IdsByKind) -> tuple[str, ...]:
    # The controller that measures it, and the supply it is judged against.
    return (config.controller, *ids[Kind.BATTERY], *ids[Kind.ALTERNATOR])


KIND = KindSpec(
    kind=Kind.LAMP,
    config_model=LampConfig,
    reading_type=LampReading,
    failures=FAILURES,
    self_test=LampTest,
    references={"controller": Kind.CONTROLLER},
    measured_by=_controller,
    depends_on=_depends_on,
)
