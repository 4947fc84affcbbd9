"""The simulated battery: a lead-acid starter battery — state of charge, internal resistance,
charge acceptance — and its intelligent battery sensor.

Its configuration, reading, failures and self-test are in `carlightd.core.kinds.battery`; this is
the part the simulated car is built from, which the core never imports (it lives with its source).

Its failures act on separate things, so several at once simply add up: `discharged` on the state
of charge, `weak` on the internal resistance, `dead_cell` on the open-circuit voltage (five cells
of six); a broken sensor (`sensor_fault`) changes only what the sensor reports. A standing
`discharged` drains the battery once, when injected, and it charges back as any battery would; an
intermittent one cannot drain and refill it from one cycle to the next, so in the cycles it is
present the battery acts as one charged to `DISCHARGED_SOC` (the charge it holds is set aside, and
counted on, untouched, as the car drives).
"""

from __future__ import annotations

from carlightd.core.domain import Kind
from carlightd.core.kinds.battery import (
    BATTERY_TEST_PULSE_A,
    BatteryConfig,
    BatteryReading,
    open_circuit_voltage,
)
from carlightd.sources.simulated.parts.base import CarView, SimulatedPart
from carlightd.sources.simulated.sensors import Noise

CELLS = 6
CHARGE_POLARISATION_OHM = 0.040
CHARGE_POLARISATION_SOC_OHM = 0.70
BATTERY_TEMPERATURE_C = 20.0
DISCHARGED_SOC = 0.05


class Battery(SimulatedPart[BatteryConfig, BatteryReading]):
    kind = Kind.BATTERY
    # The sensor's signal is lost (all zeros), or it freezes and no longer sees the test pulse.
    SENSOR_FAULTS = ("lost", "stuck")

    def __init__(self, config: BatteryConfig) -> None:
        super().__init__(config)
        self.capacity_ah = config.capacity_ah
        self.nominal_resistance = config.internal_resistance_mohm / 1000.0
        self.soc = config.initial_soc

    def inject(
        self, failure: str, intermittent: float | None = None, *, present: bool = True
    ) -> None:
        super().inject(failure, intermittent, present=present)
        if failure == "discharged" and intermittent is None:
            self.soc = DISCHARGED_SOC

    @property
    def _acting_soc(self) -> float:
        """The charge it acts with now: an intermittent discharge, present, puts it out of reach."""
        if self.has("discharged") and self.held.get("discharged") is not None:
            return min(self.soc, DISCHARGED_SOC)
        return self.soc

    def repair(self) -> None:
        """A new battery, charged as the configured one was."""
        super().repair()
        self.soc = self.config.initial_soc

    @property
    def emf(self) -> float:
        ocv = open_circuit_voltage(self._acting_soc)
        if self.has("dead_cell"):
            return ocv * (CELLS - 1) / CELLS
        return ocv

    @property
    def discharge_resistance(self) -> float:
        return self.nominal_resistance * (12.0 if self.has("weak") else 1.0)

    @property
    def charge_resistance(self) -> float:
        return (
            self.discharge_resistance
            + CHARGE_POLARISATION_OHM
            + CHARGE_POLARISATION_SOC_OHM * self._acting_soc**3
        )

    def settle(self, current_in_a: float, dt_s: float) -> None:
        """Integrate the charge that flowed in (negative: out) over dt."""
        self.soc += current_in_a * dt_s / 3600.0 / self.capacity_ah
        self.soc = min(1.0, max(0.0, self.soc))

    def measure(self, car: CarView, noise: Noise) -> BatteryReading:
        # The alternator's field off for a moment, then a known load on top.
        bus = car.bus
        step = car.solve(field_off=True)
        pulse = car.solve(field_off=True, extra_a=BATTERY_TEST_PULSE_A)
        return BatteryReading(
            voltage_v=noise.voltage(bus.voltage_v),
            current_a=noise.current(-bus.battery_in_a),
            temperature_c=noise.temperature(BATTERY_TEMPERATURE_C),
            step_voltage_v=noise.voltage(step.voltage_v),
            step_current_a=noise.current(-step.battery_in_a),
            pulse_voltage_v=noise.voltage(pulse.voltage_v),
            pulse_current_a=noise.current(-pulse.battery_in_a),
        )

    def broken(self, true: BatteryReading, pattern: str, noise: Noise) -> BatteryReading:
        if pattern == "stuck" and self._stuck is not None:
            frozen = self._stuck  # frozen when it broke: it no longer sees the test pulse
            v, i = frozen.voltage_v, frozen.current_a
            return BatteryReading(v, i, frozen.temperature_c, v, i, v, i)
        return BatteryReading(0.0, 0.0, -40.0, 0.0, 0.0, 0.0, 0.0)
