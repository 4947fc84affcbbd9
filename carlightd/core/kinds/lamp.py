"""The lamp: one lamp circuit, switched and measured by a body controller.

Here: its configuration, its reading, its failures, its self-test and what it depends on. Its DTCs
are the `kind = "lamp"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated lamp is
`carlightd/sources/simulated/parts/lamp.py` (the core never imports a source).

Self-test thresholds and their hysteresis (README, Self-tests), on the ratio of measured to
expected current at the measured supply: each trips at its threshold and passes again only once
back past it by 0.05 (a lamp whose ratio sits on a threshold gives one verdict, not a flapping one).
- `open_circuit`: below 0.15; passes again above 0.20.
- `degraded`: below 0.80; passes again above 0.85.
- `short_circuit`: above 1.60; passes again below 1.55 (or the driver trips on overcurrent).
Not run: ignition off (the controller sleeps), no reading, or a supply below 9.5 V, judged again
only from 9.7 V. With the supply too low its current sense is still checked (`sensor_fault`).
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
    Hysteresis,
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
LAMP_RATIO_MARGIN = 0.05  # hysteresis: > 4 sigma of the ratio at the highest noise
LAMP_JUDGING_MARGIN_V = 0.2
_SENSE_ONLY = frozenset({SENSOR_FAULT})


class LampTest:
    """Lamp: the circuit's current must match what the lamp draws at the measured supply voltage.

    Judging at the measured voltage is what keeps a flat battery from being blamed on the lamps.
    """

    kind = Kind.LAMP

    def __init__(self, config: LampConfig) -> None:
        self.is_led = config.technology == "led"
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.resistance = RATED_LAMP_V**2 / config.power_w
        self.open = Hysteresis(LAMP_OPEN_RATIO, LAMP_RATIO_MARGIN, fails_above=False)
        self.degraded = Hysteresis(LAMP_DEGRADED_RATIO, LAMP_RATIO_MARGIN, fails_above=False)
        self.short = Hysteresis(LAMP_SHORT_RATIO, LAMP_RATIO_MARGIN, fails_above=True)
        self.too_low = Hysteresis(LAMP_MIN_JUDGING_V, LAMP_JUDGING_MARGIN_V, fails_above=False)

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
        if self.too_low.check(reading.supply_v):
            return not_run(
                f"supply voltage too low to judge ({reading.supply_v:.2f} V)", _SENSE_ONLY
            )
        ratio = reading.current_a / self.expected_a(reading.supply_v)
        judged = f"{ratio:.0%} of expected current at {reading.supply_v:.2f} V"
        # Every band is judged on every reading, so each remembers its own side.
        open_circuit = self.open.check(ratio)
        degraded = self.degraded.check(ratio)
        short = self.short.check(ratio)
        if open_circuit:
            return fail("open_circuit", judged)
        if degraded:
            return fail("degraded", judged)
        if short:
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
