"""The lamp: one lamp circuit, switched and measured by a body controller.

Here: its configuration, its reading, its failures, its self-test and what it depends on. Its DTCs
are the `kind = "lamp"` entries of `carlightd/core/dtc_catalogue.toml`; the simulated lamp is
`carlightd/sources/simulated/parts/lamp.py` (the core never imports a source).

Self-test thresholds and their hysteresis (README, Self-tests), on the ratio of measured to
expected current at the measured supply: each trips at its threshold and passes again only once
back past it by 0.05 (a lamp whose ratio sits on a threshold gives one verdict, not a flapping one).
- `open_circuit`: below 0.15; passes again above 0.20.
- `degraded`: below 0.72; passes again only above 0.82 (`LAMP_DEGRADED_CLEAR_RATIO`: between, it
  holds its verdict, below).
- `short_circuit`: above 1.60; passes again below 1.55 (or the driver trips on overcurrent).
Not run: ignition off (the controller sleeps), no reading, or a supply below 9.5 V, judged again
only from 9.7 V. With the supply too low its current sense is still checked (`sensor_fault`).

The controller's calibration (README, Self-tests), its own data, never the simulation's equations:
- Nominal current: the configured power at the bulbs' rated 13.2 V (ECE R37), scaled with the
  measured supply for a filament (taken as ohmic over the judging range) and constant for an LED
  driver. The tolerance is the ratio bands above: a part-to-part spread of a few percent from
  nominal power (DESIGN §2; ±5 % in the simulated car) and the current sense's own gain error
  (a smart high-side driver's sense ratio kILIS, uncalibrated: ±15 % at 0.2 A, ±11 % at 0.5 A
  over temperature in Infineon's BTT6200-4ESA datasheet, Table 10; ±15 % in the simulated car)
  together put a healthy lamp anywhere in 0.81…1.21 of nominal, well inside 0.72…1.60. The
  `degraded` band is as wide as such a sense can resolve: a degraded filament (1.8 times the
  resistance, 0.56 of nominal) reads 0.47…0.67 and a degraded LED (half its current) 0.43…0.60,
  below 0.72 with about 4 noise sigmas to spare at the highest noise; a healthy one stays more
  than 6 sigmas above it. A lamp dimmed by less than about a quarter is not told from a healthy
  one with a high-reading sense. Between the bands, 0.72 to `LAMP_DEGRADED_CLEAR_RATIO` (0.82), a
  lit sample cannot say which it is: `degraded` holds its last verdict there (judged for open,
  short and the sense only), and passes again only above 0.82. That is what keeps a corroded
  ground (5 Ω, DESIGN §2) found: its lit 16 W and 21 W bulbs read up to 0.74 and 0.82 through a
  sense reading 15 % high, so they are no evidence either way, while their cold pulses read far
  below 0.70. A healthy lamp read low (0.81) may sit there: it is never failed, only not passed.
- Inrush window: a cold tungsten filament has about a tenth of its hot resistance and draws up to
  ten times its hot current, falling to about twice within 3 to 5 ms and to its hot current within
  tens of milliseconds (a lamp-driver white paper, nncyjs.com/whitepaper/2009/1230/down_198.html:
  cold resistance "approximately 10 % of the hot", "within 3 to 5 ms the current falls to
  approximately 2x the hot current"; elesa.com, "Lamp load": ten times). A filament sample taken
  less than `INRUSH_WINDOW_S` (50 ms) after its driver switched on (the first sample of a lamp
  just switched on) is judged for `open_circuit` (no current is no current, cold or hot) and its
  sense only; `degraded` and a short by ratio hold their last verdict. The off-lamp test pulse is
  sampled at the controller's own fixed instant, `COLD_PULSE_SAMPLE_S` (1 ms) in, where the
  calibration holds the cold-bulb current: `COLD_PULSE_MULTIPLE` (5.4) times the hot nominal
  current (a cold resistance of a tenth heating with a time constant of about 10 ms, the white
  paper's figures), judged `degraded` below 0.70 of that (again above 0.75): a healthy bulb's
  cold resistance (with the ambient temperature) and power take it from 0.86 to 1.20 of that,
  0.73 to 1.38 as read through a sense within ±15 %; a degraded one (1.8 times the resistance)
  reads 0.48 to 0.67, 0.41 to 0.77 as read: most are found on the pulse, the few whose sense
  reads high enough to hide them are found once lit. A short on a pulse is the driver's
  trip only. A cold filament may saturate the sense at its full scale (25 A): inside the plausible
  range, and judged for `open_circuit` only.
- PWM-dimmed lamps: the controller knows whether its output was on at the instant it sampled; an
  off-phase sample judges the sense only (`untested`, with the duty in the reason), an on-phase
  sample is judged as a steady lamp.
- LED lamps are judged only from a supply of `LED_REGULATION_MIN_V` (11.0 V; again from 11.2 V):
  below it a driver may have run out of headroom and dim, which is the supply's doing (`untested`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds.spec import Identifier, IdsByKind, KindSpec, PartConfig
from carlightd.core.selftests import (
    IGNITION_OFF,
    NO_ANSWER,
    PASSED,
    Hysteresis,
    ReadOutcome,
    SelfTestResult,
    Verdict,
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
    # PWM dimming (tails, daytime lamps): the duty the controller drives it at when on.
    pwm_duty: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _pwm_only_for_leds(self) -> LampConfig:
        # A filament at low duty runs cold, which neither the car nor the calibration models.
        if self.pwm_duty < 1.0 and self.technology != "led":
            raise ValueError(
                f"pwm_duty: {self.pwm_duty} is for LED lamps only; an incandescent lamp runs at 1.0"
            )
        return self


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class LampReading(Reading):
    """What the body controller measures on one lamp circuit.

    A lamp that is switched off is measured during a short test pulse (`pulsed`), as real
    controllers do, so a dead bulb is found before the driver needs it. The controller also knows
    when it switched its driver on (`sampled_after_s`: from switch-on or the pulse's start to the
    sample; None: long settled) and, for a PWM-dimmed lamp, its duty and whether its output was
    on at the instant it sampled (`output_on`).
    """

    commanded_on: bool
    pulsed: bool
    supply_v: float
    current_a: float
    overcurrent: bool  # the high-side driver tripped
    sampled_after_s: float | None = None
    pwm_duty: float = 1.0
    output_on: bool = True


FAILURES = ("open_circuit", "short_circuit", "degraded", SENSOR_FAULT)

# Thresholds, each several noise standard deviations away from any healthy reading (README).
LAMP_SENSE_RANGE_A = (-0.3, 25.0)
LAMP_MIN_JUDGING_V = LED_DROPOUT_V + 0.5
LAMP_OPEN_RATIO = 0.15
LAMP_DEGRADED_RATIO = 0.72  # a ±15 % sense's healthy lamp reads from 0.81 (docstring)
LAMP_DEGRADED_CLEAR_RATIO = 0.82  # below it, not told from a dim lamp read high (docstring)
LAMP_SHORT_RATIO = 1.6
LAMP_RATIO_MARGIN = 0.05  # hysteresis: > 4 sigma of the ratio at the highest noise
LAMP_JUDGING_MARGIN_V = 0.2
# Calibration (module docstring): the inrush window, the cold-bulb pulse current, and the LED
# drivers' lowest regulated supply.
INRUSH_WINDOW_S = 0.05
COLD_PULSE_SAMPLE_S = 0.001
COLD_PULSE_MULTIPLE = 5.4
COLD_PULSE_DEGRADED_RATIO = 0.70  # a healthy cold bulb reads from 0.73 through a ±15 % sense
LED_REGULATION_MIN_V = 11.0
_SENSE_ONLY = frozenset({SENSOR_FAULT})
_INRUSH_JUDGED = frozenset({"open_circuit", SENSOR_FAULT})
_PULSE_JUDGED = frozenset({"open_circuit", "degraded", SENSOR_FAULT})
_UNRESOLVED = frozenset({"open_circuit", "short_circuit", SENSOR_FAULT})


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
        self.led_unregulated = Hysteresis(
            LED_REGULATION_MIN_V, LAMP_JUDGING_MARGIN_V, fails_above=False
        )
        self.pulse_degraded = Hysteresis(
            COLD_PULSE_DEGRADED_RATIO, LAMP_RATIO_MARGIN, fails_above=False
        )

    def expected_a(self, supply_v: float) -> float:
        """The calibrated nominal current at `supply_v` (hot filament, or regulated LED)."""
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
        if not reading.output_on:
            return not_run(
                f"PWM off-phase sample ({reading.pwm_duty:.0%} duty): current not judged",
                _SENSE_ONLY,
            )
        if self.too_low.check(reading.supply_v):
            return not_run(
                f"supply voltage too low to judge ({reading.supply_v:.2f} V)", _SENSE_ONLY
            )
        if self.is_led and self.led_unregulated.check(reading.supply_v):
            return not_run(
                f"supply {reading.supply_v:.2f} V below the LED driver's regulation "
                f"({LED_REGULATION_MIN_V:.1f} V): a healthy LED may dim",
                _SENSE_ONLY,
            )
        ratio = reading.current_a / self.expected_a(reading.supply_v)
        judged = f"{ratio:.0%} of expected current at {reading.supply_v:.2f} V"
        after = reading.sampled_after_s
        if not self.is_led and after is not None and after < INRUSH_WINDOW_S:
            return self._assess_cold(reading, ratio, after, judged)
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
        if ratio < LAMP_DEGRADED_CLEAR_RATIO:
            # Between the bands: a dim lamp read through a high sense, or a healthy one through a
            # low one. `degraded` holds its verdict (and a ground takes it as no evidence).
            return SelfTestResult(
                Verdict.PASSED,
                reason=f"{judged}: within the current sense's tolerance, degraded not judged",
                judged=_UNRESOLVED,
            )
        return PASSED

    def _assess_cold(
        self, reading: LampReading, ratio: float, after: float, judged: str
    ) -> SelfTestResult:
        """A filament sampled inside its inrush window: it only ever draws more than hot, so an
        open one is still found; the calibrated pulse also tells a degraded one; the rest holds."""
        if self.open.check(ratio):
            return fail("open_circuit", judged)
        saturated = reading.current_a >= LAMP_SENSE_RANGE_A[1]
        if reading.pulsed and abs(after - COLD_PULSE_SAMPLE_S) < 1e-4 and not saturated:
            cold = ratio / COLD_PULSE_MULTIPLE
            if self.pulse_degraded.check(cold):
                return fail(
                    "degraded",
                    f"{cold:.0%} of a cold bulb's test-pulse current at {reading.supply_v:.2f} V",
                )
            return SelfTestResult(Verdict.PASSED, judged=_PULSE_JUDGED)
        when = f"sampled {after * 1000:.0f} ms after switch-on"
        why = "saturates the sense" if saturated else when
        return SelfTestResult(
            Verdict.PASSED,
            reason=f"cold filament inrush, {why}: judged for open circuit only",
            judged=_INRUSH_JUDGED,
        )


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
    # A blown fuse darkens every lamp it feeds; a corroded ground dims what it serves (an LED
    # driver too, once the drop leaves it short of headroom). An open bulb behind a corroded
    # ground is the bulb's own (the fuse or ground names its lamps).
    caused_by={
        Kind.FUSE: {"blown": frozenset({"open_circuit"})},
        Kind.GROUND: {"high_resistance": frozenset({"degraded"})},
    },
)
