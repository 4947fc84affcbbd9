"""The physics of a 12 V car's bus: where battery, alternator and loads meet.

The model is quasi-static: each cycle the bus voltage is the point where what the alternator
supplies equals what the loads and the battery take. Every element is linear in pieces, so the
balance is solved exactly (no iteration) — see `solve_bus`. The elements themselves are the
simulated parts (`parts/`), each with its constants and where they come from (all documented in
the README's "The simulated car"):
- battery: lead-acid open-circuit voltage rises roughly linearly from 12.0 V empty to 12.7 V full
  (6 cells of 2.0 to 2.12 V), a shorted cell takes a sixth of that away; a few milliohms of
  internal resistance, a worn one ten times more; a charging battery accepts less current the
  fuller it is, modelled as a polarisation resistance that grows with state of charge (about 3 A
  at 14.2 V when 85 % full, tens of amperes when empty).
- lamps: 12 V bulbs are rated at 13.2 V (ECE R37); a filament is treated as a fixed resistance, so
  its current follows the supply, I = V/R. LED lamps have a constant-current driver that drops out
  below 9 V.
- alternator: about 45 % of its rating at engine idle (800 rpm) and all of it from 3000 rpm; its
  regulator holds the bus at the set-point the engine computer commands (smart charging,
  12.8-15.0 V, `parts/alternator.py`) while it has current to spare.
- starter: while it cranks, one resistance across the bus (`car.py`, `STARTER_OHM`).
- fuses and ground points: in series with the lamps they name (`wiring.Feed`, asked by each lamp
  for its draw and its measurement). A blown fuse opens its lamps' circuits: they draw nothing. A
  corroded ground adds its resistance R_g in series with each lamp it serves, so a filament of
  conductance g draws g/(1 + g·R_g) — still linear, so the balance stays exact; an LED driver's
  current is left as it is here (its drop across R_g, a volt or two at a few hundred
  milliamperes, only matters near its regulation limit, which the lamp's own measurement
  models). Each lamp is worked out as if alone on its ground point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from carlightd.core.kinds.lamp import LED_DROPOUT_V


class StorageBattery(Protocol):
    """What the bus needs of the battery (`parts/battery.py`): its EMF and its two resistances."""

    @property
    def emf(self) -> float: ...

    @property
    def discharge_resistance(self) -> float: ...

    @property
    def charge_resistance(self) -> float: ...


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


def _balance(battery: StorageBattery, loads: Loads, supply_a: float) -> float:
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


def _battery_in(battery: StorageBattery, voltage_v: float) -> float:
    emf = battery.emf
    if voltage_v > emf:
        return (voltage_v - emf) / battery.charge_resistance
    return (voltage_v - emf) / battery.discharge_resistance


def solve_bus(
    battery: StorageBattery, loads: Loads, capacity_a: float, setpoint_v: float
) -> BusState:
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
