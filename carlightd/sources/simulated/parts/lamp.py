"""The simulated lamp: one lamp circuit, an incandescent bulb or an LED lamp with its driver.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.lamp`; this is the
part the simulated car is built from, which the core never imports (it lives with its source).

Several failures at once: a short circuit (in the harness, before the bulb) trips the driver
whatever the bulb does, so it wins over `open_circuit` and `degraded`; an open bulb passes nothing,
so it wins over `degraded`. A broken current sense (`sensor_fault`) changes only what the sense
line reads: the lamp still draws (or not) what its other failures allow, and the driver's trip
flag, a separate status line, still reports a short.
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.lamp import LED_DROPOUT_V, RATED_LAMP_V, LampConfig, LampReading
from carlightd.sources.simulated.parts.base import NO_DRAW, CarView, Draw, SimulatedPart
from carlightd.sources.simulated.profile import DriverInputs
from carlightd.sources.simulated.sensors import Noise

SHORT_CIRCUIT_LIMIT_A = 24.0  # the high-side driver's current limit before it trips


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
        self.resistance = RATED_LAMP_V**2 / config.power_w  # filament, hot
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.conductance = 0.0  # siemens drawn by a filament (0 for LEDs and dead circuits)
        self.constant_current_a = 0.0  # what an LED driver draws above drop-out (0 for filaments)
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

    def current_at(self, supply_v: float) -> float:
        if self.is_led:
            return self.constant_current_a if supply_v >= LED_DROPOUT_V else 0.0
        return supply_v * self.conductance

    def draw(self, inputs: DriverInputs) -> Draw:
        if self.function in inputs.lamps_on:
            return self.conductance, self.constant_current_a
        return NO_DRAW

    def measure(self, car: CarView, noise: Noise) -> LampReading:
        # A lamp that is off is measured during a short test pulse.
        bus_v = car.bus.voltage_v
        on = self.function in car.inputs.lamps_on
        if self.has("short_circuit"):
            return LampReading(on, not on, noise.voltage(bus_v), SHORT_CIRCUIT_LIMIT_A, True)
        current = noise.current(self.current_at(bus_v))
        return LampReading(on, not on, noise.voltage(bus_v), current, False)

    def broken(self, true: LampReading, pattern: str, noise: Noise) -> LampReading:
        value = -1.5 if pattern == "negative" else 25.5
        # The trip flag is the driver's own status line, not the broken sense: it still tells.
        return LampReading(true.commanded_on, true.pulsed, true.supply_v, value, true.overcurrent)
