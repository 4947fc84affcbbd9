"""The vocabulary shared by the simulated car and the diagnostics: part kinds, their failure modes,
key positions and what each sensor reports.

The diagnostics never look inside the simulation; they see only these readings, exactly as they
would on a real car. That boundary is what keeps the self-tests honest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from carlightd.errors import CarlightdError


class Kind(StrEnum):
    LAMP = "lamp"
    BATTERY = "battery"
    ALTERNATOR = "alternator"
    CONTROLLER = "controller"


class Ignition(StrEnum):
    OFF = "off"
    ON = "on"
    RUN = "run"  # the engine runs


SENSOR_FAULT = "sensor_fault"

# Specifications both the car and its diagnostics know, as a workshop manual would state them.
RATED_LAMP_V = 13.2  # 12 V bulbs are rated at 13.2 V (ECE R37)
LED_DROPOUT_V = 9.0  # LED lamp drivers stop regulating below this supply
BATTERY_TEST_PULSE_A = 30.0  # the load the battery test step adds
OCV_EMPTY_V = 12.0  # lead-acid open-circuit voltage, 6 cells, empty …
OCV_FULL_V = 12.7  # … and full; roughly linear in between


def open_circuit_voltage(soc: float) -> float:
    """A healthy lead-acid battery's resting voltage at a state of charge between 0 and 1."""
    return OCV_EMPTY_V + (OCV_FULL_V - OCV_EMPTY_V) * soc


# The failure catalogue (DESIGN §2): what can go wrong with each kind of part.
FAILURES: dict[Kind, tuple[str, ...]] = {
    Kind.LAMP: ("open_circuit", "short_circuit", "degraded", SENSOR_FAULT),
    Kind.BATTERY: ("discharged", "weak", "dead_cell", SENSOR_FAULT),
    Kind.ALTERNATOR: ("no_output", "undercharging", "overcharging", "diode_failure", SENSOR_FAULT),
    Kind.CONTROLLER: ("no_response",),
}


class UnknownFailureError(CarlightdError, ValueError):
    """A failure mode that the part's kind cannot have."""

    def __init__(self, kind: Kind, failure: str) -> None:
        allowed = ", ".join(FAILURES[kind])
        super().__init__(f"a {kind} cannot have failure {failure!r}; expected one of: {allowed}")
        self.kind = kind
        self.failure = failure


def check_failure(kind: Kind, failure: str) -> None:
    if failure not in FAILURES[kind]:
        raise UnknownFailureError(kind, failure)


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class LampReading:
    """What the body controller measures on one lamp circuit.

    A lamp that is switched off is measured during a short test pulse (`pulsed`), as real
    controllers do, so a dead bulb is found before the driver needs it.
    """

    commanded_on: bool
    pulsed: bool
    supply_v: float
    current_a: float
    overcurrent: bool  # the high-side driver tripped


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class BatteryReading:
    """The intelligent battery sensor, read twice around the test step's load pulse.

    During the step the controller switches the alternator's field off for a moment and adds a known
    load, so two points of the battery's voltage/current line are measured whatever the engine does:
    the slope is the internal resistance, the intercept the open-circuit voltage.
    """

    voltage_v: float  # at the terminals, as the car runs
    current_a: float  # positive = discharging
    temperature_c: float
    step_voltage_v: float  # alternator field off for a moment: the battery alone carries the loads
    step_current_a: float
    pulse_voltage_v: float  # field off and a known extra load
    pulse_current_a: float


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class AlternatorReading:
    """The alternator's regulator as reported over LIN, plus engine speed."""

    engine_rpm: float
    output_v: float
    output_a: float
    ripple_v: float  # AC ripple, peak to peak
    field_duty: float  # 0..1; 1 means the regulator asks for all the alternator has


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class ControllerReading:
    """The body controller answered its ping."""

    supply_v: float


Reading = LampReading | BatteryReading | AlternatorReading | ControllerReading


def reading_as_dict(reading: Reading) -> dict[str, Any]:
    """Readings rounded for people and payloads; the noise floor is well above a millivolt."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(reading):
        value = getattr(reading, field.name)
        out[field.name] = round(value, 3) if isinstance(value, float) else value
    return out
