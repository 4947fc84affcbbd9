"""The simulated lamp: one lamp circuit, an incandescent bulb or an LED lamp with its driver.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.lamp`; this is the
part the simulated car is built from, which the core never imports (it lives with its source).

Several failures at once: a short circuit (in the harness, before the bulb) trips the driver
whatever the bulb does, so it wins over `open_circuit` and `degraded`; an open bulb passes nothing,
so it wins over `degraded`. A broken current sense (`sensor_fault`) changes only what the sense
line reads: the lamp still draws (or not) what its other failures allow, and the driver's trip
flag, a separate status line, still reports a short.

A real lamp, not a nominal one (DESIGN §2; README, The simulated car):
- Part-to-part spread: each lamp draws its nominal power times a factor drawn once, uniformly
  within ±`POWER_SPREAD` (5 %), from its own seeded stream when the car is built.
- Current-sense gain spread: a smart high-side driver reports its load current as a sense current
  through a ratio kILIS whose part-to-part tolerance is large (Infineon's PROFET+ BTS5045-2EKA
  datasheet: kILIS tolerance about ±10 % at nominal load, wider at low load; the BTS7008-2EPA
  similar). Each lamp's sense reads its true current times a gain drawn once, uniformly within
  ±`SENSE_GAIN_SPREAD` (15 %), from the same per-part seeded stream after the power spread (so
  the power spread and filament draws of a seed are unchanged). It scales only what the sense
  reads: the lamp draws, and the bus sees, its true current.
- Cold filament inrush: a tungsten filament's resistance rises from about a tenth of its hot value
  (each bulb's own at 20 °C, drawn once within 9-11 %, times 1 + alpha·(ambient - 20 °C) with
  tungsten's temperature coefficient alpha = 0.0045/K, as tabulated e.g. in Wikipedia's "Electrical
  resistivity and conductivity": 8.2 % of hot at -20 °C, 10.9 % at +40 °C for a 10 % bulb) as it
  heats, R(t) = R_hot·(1 - (1 - c)·e^(-t/τ)),
  τ = 10 ms: about 10x the hot current at switch-on,
  2.5x after 4 ms, within 5 % of hot after 30 ms (a lamp-driver white paper,
  nncyjs.com/whitepaper/2009/1230/down_198.html: "approximately 10 % of the hot filament
  resistance", "10x to 12x peak", "within 3 to 5 ms the current falls to approximately 2x";
  elesa.com, "Lamp load"). The body controller samples a lamp it has just switched on
  `FIRST_SAMPLE_S` (5 ms) after switch-on, and an off lamp `PULSE_SAMPLE_S` (1 ms) into its test
  pulse, so both see a cold filament (about 2.2x and 5.4x the hot current); later samples see it
  hot. A filament is taken as back at ambient temperature at every pulse (an idealization: one
  switched off under a second ago, a flashing indicator's, is still somewhat warm). The current
  sense saturates at its full scale, 25 A; the driver tolerates inrush (it trips on a short only).
  The bus itself sees the hot filament: the inrush is over long before the quasi-static bus moves.
- PWM dimming (LED lamps, `pwm_duty` < 1): on average the lamp draws duty x its current; the
  controller samples at a random phase (drawn from the part's noise stream), so it sees the
  on-current with probability duty, else none, and reports which (`output_on`).
- LED drivers regulate their current down to `LED_REGULATION_V` (10.8 V), below that they run out
  of headroom and dim linearly to nothing at drop-out (9.0 V), as linear/buck LED drivers do
  ("regulate down to about 10-11 V", DESIGN §2). The bus solve keeps their full current down to
  drop-out (under 1 A in all for the default car: an idealization of the bus, not the lamp).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from carlightd.core.domain import Kind
from carlightd.core.kinds.lamp import LED_DROPOUT_V, RATED_LAMP_V, LampConfig, LampReading
from carlightd.sources.simulated.parts.base import NO_DRAW, CarView, Draw, SimulatedPart
from carlightd.sources.simulated.profile import DriverInputs
from carlightd.sources.simulated.sensors import Noise
from carlightd.sources.simulated.wiring import DIRECT, Feed

SHORT_CIRCUIT_LIMIT_A = 24.0  # the high-side driver's current limit before it trips
SENSE_FULL_SCALE_A = 25.0  # the current sense saturates here (a broken one reads beyond it)
POWER_SPREAD = 0.05  # each lamp within ±5 % of its nominal power
SENSE_GAIN_SPREAD = 0.15  # each lamp's current sense reads within ±15 % of its true current
FILAMENT_COLD_RATIO = (0.09, 0.11)  # cold resistance / hot resistance at 20 °C, per bulb
TUNGSTEN_ALPHA_PER_K = 0.0045  # tungsten's temperature coefficient of resistance near 20 °C
FILAMENT_TAU_S = 0.010  # the filament's heating time constant
FIRST_SAMPLE_S = 0.005  # the controller samples a lamp this long after switching it on
PULSE_SAMPLE_S = 0.001  # and an off lamp this far into its test pulse
LED_REGULATION_V = 10.8  # LED drivers hold their current down to here, then dim to drop-out


def filament_inrush(after_s: float, cold_ratio: float = 0.1) -> float:
    """A filament's current `after_s` after switch-on from cold, in multiples of its hot current."""
    return 1.0 / (1.0 - (1.0 - cold_ratio) * math.exp(-after_s / FILAMENT_TAU_S))


class Lamp(SimulatedPart[LampConfig, LampReading]):
    """What it draws changes only when it breaks or is replaced, so it is worked out then, not on
    every measurement (the cycle reads every lamp, every cycle)."""

    kind = Kind.LAMP
    # The current sense line reads negative, or saturates at full scale.
    SENSOR_FAULTS = ("negative", "saturated")

    def __init__(self, config: LampConfig) -> None:
        super().__init__(config)
        self.function = config.function
        self.is_led = config.technology == "led"
        self.pwm_duty = config.pwm_duty
        self.spread = 1.0  # its power / nominal power (`manufacture`)
        self.cold_ratio = 0.1  # its filament's cold / hot resistance at 20 °C (`manufacture`)
        self.sense_gain = 1.0  # what its current sense reads / its true current (`manufacture`)
        self.ambient_c = 20.0  # what a cold filament is at, as last measured
        self.resistance = RATED_LAMP_V**2 / config.power_w  # filament, hot
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.conductance = 0.0  # siemens drawn by a filament (0 for LEDs and dead circuits)
        self.constant_current_a = 0.0  # what an LED driver draws above drop-out (0 for filaments)
        self.feed: Feed = DIRECT  # its fuses and ground points, set by the car (`wiring.feeds`)
        self._on_since: float | None = None  # when its driver was last switched on, as sampled
        self._settle()

    def manufacture(self, rng: random.Random) -> None:
        self.set_spread(1.0 + rng.uniform(-POWER_SPREAD, POWER_SPREAD))
        self.cold_ratio = rng.uniform(*FILAMENT_COLD_RATIO)
        # Drawn last, so the draws above stay what they were for a seed.
        self.sense_gain = 1.0 + rng.uniform(-SENSE_GAIN_SPREAD, SENSE_GAIN_SPREAD)

    def set_spread(self, spread: float) -> None:
        """This lamp's power is `spread` x nominal (tests pick the extremes)."""
        self.spread = spread
        nominal = self.config.power_w * spread
        self.resistance = RATED_LAMP_V**2 / nominal
        self.led_current_a = nominal / RATED_LAMP_V
        self._settle()

    def changed(self) -> None:
        self._settle()

    def _settle(self) -> None:
        # Open bulbs pass nothing; a shorted circuit trips its driver, which then passes none.
        conducts = not (self.has("open_circuit") or self.has("short_circuit"))
        dim = self.has("degraded")
        self.conductance = (
            0.0 if self.is_led or not conducts else 1.0 / (self.resistance * (1.8 if dim else 1.0))
        )
        self.constant_current_a = (
            self.led_current_a * (0.5 if dim else 1.0) if self.is_led and conducts else 0.0
        )

    def current_at(self, supply_v: float, after_s: float | None = None) -> float:
        """Its current at `supply_v`, hot or (`after_s` from a cold switch-on) during inrush."""
        if self.is_led:
            if supply_v >= LED_REGULATION_V:
                return self.constant_current_a
            if supply_v > LED_DROPOUT_V:  # out of headroom: dims towards drop-out
                headroom = (supply_v - LED_DROPOUT_V) / (LED_REGULATION_V - LED_DROPOUT_V)
                return self.constant_current_a * headroom
            return 0.0
        hot = supply_v * self.conductance
        if after_s is None:
            return hot
        cold = self.cold_ratio * (1.0 + TUNGSTEN_ALPHA_PER_K * (self.ambient_c - 20.0))
        return hot * filament_inrush(after_s, cold)

    def draw(self, inputs: DriverInputs) -> Draw:
        if self.function in inputs.lamps_on and self.feed.live:  # a blown fuse: nothing
            return self.feed.conductance(self.conductance), self.constant_current_a * self.pwm_duty
        return NO_DRAW

    def _sampled_after(self, car: CarView, on: bool) -> float:
        """From the driver's switch-on (or the test pulse's start) to the controller's sample."""
        if not on:  # a test pulse, on a filament long cold
            self._on_since = None
            return PULSE_SAMPLE_S
        if self._on_since is None:
            self._on_since = car.time_s
        return FIRST_SAMPLE_S + (car.time_s - self._on_since)

    def measure(self, car: CarView, noise: Noise) -> LampReading:
        # A lamp that is off is measured during a short test pulse.
        bus_v = car.bus.voltage_v
        on = self.function in car.inputs.lamps_on
        after = self._sampled_after(car, on)
        self.ambient_c = car.inputs.ambient_c  # a cold filament is at the air's temperature
        duty = self.pwm_duty if on else 1.0
        # A PWM output is sampled at a random phase: on with probability duty.
        output_on = duty >= 1.0 or noise.rng.random() < duty
        if self.has("short_circuit") and output_on and self.feed.live:
            return LampReading(
                on, not on, noise.voltage(bus_v), SHORT_CIRCUIT_LIMIT_A, True, after, duty
            )
        # Through its fuses and ground points (`wiring.Feed`).
        current = (
            self.feed.current(lambda v: self.current_at(v, after), bus_v) if output_on else 0.0
        )
        # The sense's gain error scales what it reads, not what the lamp draws.
        sensed = min(noise.current(current * self.sense_gain), SENSE_FULL_SCALE_A)
        return LampReading(on, not on, noise.voltage(bus_v), sensed, False, after, duty, output_on)

    def broken(self, true: LampReading, pattern: str, noise: Noise) -> LampReading:
        value = -1.5 if pattern == "negative" else 25.5
        # The trip flag is the driver's own status line, not the broken sense: it still tells.
        return replace(true, current_a=value)
