"""The physics of a 12 V car: battery, alternator, lamps and one bus joining them.

The model is quasi-static: each cycle the bus voltage is the point where what the alternator
supplies equals what the loads and the battery take. Every element is linear in pieces, so the
balance is solved exactly (no iteration) — see `solve_bus`.

Constants and where they come from (all documented in the README's "The simulated car"):
- Lead-acid open-circuit voltage rises roughly linearly from 12.0 V empty to 12.7 V full
  (6 cells of 2.0 to 2.12 V). A shorted cell takes a sixth of that away.
- A healthy starter battery has a few milliohms of internal resistance; a worn one ten times more.
- A charging battery accepts less current the fuller it is; modelled as a polarisation resistance
  that grows with state of charge (about 3 A at 14.2 V when 85 % full, tens of amperes when empty).
- 12 V bulbs are rated at 13.2 V (ECE R37); a filament is treated as a fixed resistance, so its
  current follows the supply, I = V/R. LED lamps have a constant-current driver that drops out
  below 9 V.
- An alternator delivers about 45 % of its rating at engine idle (800 rpm) and all of it from
  3000 rpm; its regulator holds the bus at the set-point (14.2 V) while it has current to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

from carlightd.core.kinds.alternator import AlternatorConfig
from carlightd.core.kinds.battery import BatteryConfig, open_circuit_voltage
from carlightd.core.kinds.lamp import LED_DROPOUT_V, RATED_LAMP_V, LampConfig

CELLS = 6
CHARGE_POLARISATION_OHM = 0.040
CHARGE_POLARISATION_SOC_OHM = 0.70
IDLE_RPM = 800.0
FULL_OUTPUT_RPM = 3000.0
IDLE_OUTPUT_FRACTION = 0.45
MIN_TURNING_RPM = 400.0
SHORT_CIRCUIT_LIMIT_A = 24.0  # the high-side driver's current limit before it trips


class Battery:
    """A lead-acid starter battery: state of charge, internal resistance, charge acceptance."""

    def __init__(self, config: BatteryConfig) -> None:
        self.config = config
        self.capacity_ah = config.capacity_ah
        self.nominal_resistance = config.internal_resistance_mohm / 1000.0
        self.soc = config.initial_soc
        self.failure: str | None = None

    def inject(self, failure: str) -> None:
        self.failure = failure
        if failure == "discharged":
            self.soc = 0.05

    def repair(self) -> None:
        """A new battery, charged as the configured one was."""
        self.failure = None
        self.soc = self.config.initial_soc

    @property
    def emf(self) -> float:
        ocv = open_circuit_voltage(self.soc)
        if self.failure == "dead_cell":
            return ocv * (CELLS - 1) / CELLS
        return ocv

    @property
    def discharge_resistance(self) -> float:
        return self.nominal_resistance * (12.0 if self.failure == "weak" else 1.0)

    @property
    def charge_resistance(self) -> float:
        return (
            self.discharge_resistance
            + CHARGE_POLARISATION_OHM
            + CHARGE_POLARISATION_SOC_OHM * self.soc**3
        )

    def settle(self, current_in_a: float, dt_s: float) -> None:
        """Integrate the charge that flowed in (negative: out) over dt."""
        self.soc += current_in_a * dt_s / 3600.0 / self.capacity_ah
        self.soc = min(1.0, max(0.0, self.soc))


class Alternator:
    """A claw-pole alternator with its voltage regulator."""

    def __init__(self, config: AlternatorConfig) -> None:
        self.config = config
        self.failure: str | None = None

    def inject(self, failure: str) -> None:
        self.failure = failure

    def repair(self) -> None:
        self.failure = None

    @property
    def setpoint_v(self) -> float:
        if self.failure == "undercharging":  # the regulator drifted low
            return self.config.setpoint_v - 1.2
        if self.failure == "overcharging":  # the regulator lost control of the field
            return self.config.setpoint_v + 1.6
        return self.config.setpoint_v

    def capacity_a(self, rpm: float) -> float:
        """The most current the alternator can give at this engine speed."""
        if rpm < MIN_TURNING_RPM or self.failure == "no_output":
            return 0.0
        span = (rpm - IDLE_RPM) / (FULL_OUTPUT_RPM - IDLE_RPM)
        fraction = min(1.0, max(0.0, IDLE_OUTPUT_FRACTION + (1 - IDLE_OUTPUT_FRACTION) * span))
        capacity = self.config.rated_current_a * fraction
        if self.failure == "diode_failure":  # one phase lost
            capacity *= 0.6
        return capacity

    def ripple_v(self, field_duty: float) -> float:
        if self.failure == "diode_failure":
            return 0.9 + 0.8 * field_duty
        return 0.04 + 0.12 * field_duty


class Lamp:
    """One lamp circuit: an incandescent bulb or an LED lamp with its driver.

    What it draws changes only when it breaks or is replaced, so it is worked out then, not on
    every measurement (the cycle reads every lamp, every cycle).
    """

    def __init__(self, config: LampConfig) -> None:
        self.config = config
        self.function = config.function
        self.is_led = config.technology == "led"
        self.resistance = RATED_LAMP_V**2 / config.power_w  # filament, hot
        self.led_current_a = config.power_w / RATED_LAMP_V
        self.failure: str | None = None
        self.conductance = 0.0  # siemens drawn by a filament (0 for LEDs and dead circuits)
        self.constant_current_a = 0.0  # what an LED driver draws above drop-out (0 for filaments)
        self._settle()

    def inject(self, failure: str) -> None:
        self.failure = failure
        self._settle()

    def repair(self) -> None:
        self.failure = None
        self._settle()

    def _settle(self) -> None:
        # Open bulbs pass nothing; a shorted circuit trips its driver, which then passes none.
        conducts = self.failure not in ("open_circuit", "short_circuit")
        dim = self.failure == "degraded"
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


@dataclass(frozen=True, slots=True)
class BusState:
    voltage_v: float
    alternator_a: float
    battery_in_a: float  # positive = charging


@dataclass(frozen=True, slots=True)
class Loads:
    """Everything on the bus besides battery and alternator, as a piecewise-linear load."""

    fixed_a: float  # electronics, pumps, fans, test pulses
    conductance_s: float  # filaments
    led_a: float  # LED drivers, above LED_DROPOUT_V

    def current_at(self, voltage_v: float) -> float:
        led = self.led_a if voltage_v >= LED_DROPOUT_V else 0.0
        return self.fixed_a + self.conductance_s * voltage_v + led


def _balance(battery: Battery, loads: Loads, supply_a: float) -> float:
    """The bus voltage at which loads plus battery take exactly supply_a (exact, piecewise)."""
    emf = battery.emf

    def solve(fixed_a: float) -> float:
        # The discharging piece (V <= emf) if its solution lies there, else the charging piece.
        def on_piece(resistance: float) -> float:
            return (supply_a - fixed_a + emf / resistance) / (loads.conductance_s + 1 / resistance)

        discharging = on_piece(battery.discharge_resistance)
        if discharging <= emf:
            return max(0.0, discharging)
        return on_piece(battery.charge_resistance)

    with_leds = solve(loads.fixed_a + loads.led_a)
    if with_leds >= LED_DROPOUT_V or loads.led_a == 0.0:
        return with_leds
    return solve(loads.fixed_a)


def _battery_in(battery: Battery, voltage_v: float) -> float:
    emf = battery.emf
    if voltage_v > emf:
        return (voltage_v - emf) / battery.charge_resistance
    return (voltage_v - emf) / battery.discharge_resistance


def solve_bus(battery: Battery, loads: Loads, capacity_a: float, setpoint_v: float) -> BusState:
    """The bus: regulated at the set-point while the alternator can supply what is asked."""
    if capacity_a > 0.0:
        need = loads.current_at(setpoint_v) + _battery_in(battery, setpoint_v)
        if 0.0 <= need <= capacity_a:
            return BusState(setpoint_v, need, _battery_in(battery, setpoint_v))
        if need > capacity_a:
            voltage = _balance(battery, loads, capacity_a)
            return BusState(voltage, capacity_a, _battery_in(battery, voltage))
    voltage = _balance(battery, loads, 0.0)
    return BusState(voltage, 0.0, _battery_in(battery, voltage))
