"""The simulated car: its parts, its bus, its driver, and the measurements the diagnostics ask for.

`Car.measure(part)` is the self-test's *test step* carried out on the car: each part stimulates
itself the way a real controller would (a pulse on a switched-off lamp, a load pulse on the battery
with the alternator's field off, a ping to the controller) and returns what the sensors saw, noise
and broken sensors included. Judging the measurement is the diagnostics' job, not the car's.

The parts are built from `parts.SIMULATED`, one class per kind; the car itself knows only the bus:
the battery and the alternator that feed it (exactly one each, as the configuration requires) and
what every part draws from it.

Starting: turning the key to `run` (`set_ignition`) cranks the engine first, for `crank_s` of
simulated time (`CRANK_S`, 1.2 s, plus `CRANK_COLD_S_PER_K` per kelvin below 20 °C: thicker oil),
the starter and its cables drawing as one resistance `STARTER_OHM` (18 mΩ: some 400-550 A from a
healthy battery, the bus dipping to about 8-10 V as in ISO 16750-2's starting profile) at
`CRANK_RPM`, below the alternator's cut-in; then the engine runs, unless the battery could not
crank it (`Battery.can_crank`: too flat or too weak), and then the key stays at `run` with the
engine stopped until the key is turned again. A car built with the key at `run` has a running
engine (it started before the simulation began). The engine computer commands the alternator's
set-point every cycle (`parts/alternator.py`, smart charging) from the battery's charge and
temperature and the time since the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from carlightd.core.domain import SENSOR_FAULT, Ignition, Kind, Reading
from carlightd.core.kinds import KINDS, PartConfig, check_failure
from carlightd.errors import CarlightdError, UnknownPartError
from carlightd.sources.simulated.electrical import BusState, Loads, solve_bus
from carlightd.sources.simulated.parts import SIMULATED, Part
from carlightd.sources.simulated.parts.alternator import Alternator, commanded_setpoint
from carlightd.sources.simulated.parts.base import (
    check_intermittent,
    intermittency_rng,
    spread_rng,
)
from carlightd.sources.simulated.parts.battery import Battery
from carlightd.sources.simulated.parts.lamp import Lamp
from carlightd.sources.simulated.profile import (
    DriverInputs,
    ProfileName,
    driver_inputs,
    weather,
)
from carlightd.sources.simulated.sensors import Noise, part_rng
from carlightd.sources.simulated.wiring import feeds

# Steady loads besides lamps: sleeping electronics; ECUs and pumps with the key on; plus ignition,
# fuel pump and fans with the engine running.
BASE_LOAD_A = {Ignition.OFF: 0.03, Ignition.ON: 6.0, Ignition.RUN: 18.0}
STARTER_OHM = 0.018
CRANK_RPM = 200.0
CRANK_S = 1.2
CRANK_COLD_S_PER_K = 0.02


class NoResponseError(CarlightdError):
    """The controller that would take this measurement did not answer."""

    def __init__(self, part_id: str, controller_id: str) -> None:
        super().__init__(f"{controller_id} did not answer for {part_id}")
        self.part_id = part_id
        self.controller_id = controller_id


def _build(config: PartConfig) -> Part:
    return SIMULATED[Kind(config.kind)](config)


@dataclass(frozen=True, slots=True)
class CarSnapshot:
    """The true state, for logs and tests; the diagnostics never see it."""

    time_s: float
    ignition: Ignition
    engine_rpm: float
    bus_v: float
    battery_soc: float
    alternator_a: float
    lamps_on: frozenset[str]
    cranking: bool = False
    ambient_c: float = 20.0
    battery_temperature_c: float = 20.0
    setpoint_v: float = 14.2  # commanded by the engine computer


class Car:
    def __init__(
        self,
        components: Sequence[PartConfig],
        *,
        seed: int,
        noise: float,
        ignition: Ignition,
        profile: ProfileName = "drive",
        ambient_c: float = 20.0,
    ) -> None:
        self.parts: dict[str, Part] = {c.id: _build(c) for c in components}
        for part_id, feed in feeds(components, self.parts).items():  # fuses and ground points
            part = self.parts[part_id]
            if isinstance(part, Lamp):
                part.feed = feed
        self.kinds: dict[str, Kind] = {c.id: Kind(c.kind) for c in components}
        self._noise = {c.id: Noise(part_rng(seed, c.id), noise) for c in components}
        self._intermittency = {c.id: intermittency_rng(seed, c.id) for c in components}
        for part_id, part in self.parts.items():  # part-to-part spread, seeded per part
            part.manufacture(spread_rng(seed, part_id))
        self.battery = next(p for p in self.parts.values() if isinstance(p, Battery))
        self.alternator = next(p for p in self.parts.values() if isinstance(p, Alternator))
        # Who answers for a part measured through another (a lamp: its controller).
        self._answered_by: dict[str, Part] = {}
        for component in components:
            through = KINDS[Kind(component.kind)].measured_by(component)
            if through is not None and through in self.parts:
                self._answered_by[component.id] = self.parts[through]
        self.profile: ProfileName = profile
        self.ignition = ignition
        self.time_s = 0.0
        self.seed = seed
        self.weather = weather(seed, ambient_c)
        self.battery.temperature_c = self.weather.at(0.0)  # it has stood in this weather
        self._running = ignition is Ignition.RUN  # built at `run`: started before we began
        self._crank_until: float | None = None
        self._crank_ok = False
        self._crank_end: float | None = None
        self._inputs = self._drive()
        self._loads = Loads(0.0, 0.0, 0.0)
        self._bus = self._solve()

    # --- driver and workshop -------------------------------------------------------------------

    def set_ignition(self, ignition: Ignition) -> None:
        """Turn the key; to `run` with the engine stopped, the starter cranks first."""
        starting = ignition is Ignition.RUN and not self._running and self._crank_until is None
        self.ignition = ignition
        if ignition is not Ignition.RUN:
            self._running = False
            self._crank_until = None
        elif starting:
            self._crank_until = self.time_s + self.crank_s
        self._inputs = self._drive()
        self._bus = self._solve()
        if starting:
            self._crank_ok = self.battery.can_crank(self._bus.voltage_v)

    def set_ambient(self, base_c: float) -> None:
        """Move the car to another climate (the battery has stood in it: it takes it at once)."""
        self.weather = weather(self.seed, base_c)
        self.battery.temperature_c = self.weather.at(self.time_s)
        self._inputs = self._drive()
        self._bus = self._solve()

    @property
    def crank_s(self) -> float:
        """How long the starter turns the engine at the battery's temperature."""
        cold = max(0.0, 20.0 - self.battery.temperature_c)
        return CRANK_S + CRANK_COLD_S_PER_K * cold

    @property
    def engine_running(self) -> bool:
        return self._running

    @property
    def cranking(self) -> bool:
        return self._crank_until is not None

    @property
    def since_crank_s(self) -> float | None:
        return None if self._crank_end is None else self.time_s - self._crank_end

    def set_noise(self, scale: float) -> None:
        for noise in self._noise.values():
            noise.scale = scale

    def part(self, part_id: str) -> Part:
        try:
            return self.parts[part_id]
        except KeyError:
            raise UnknownPartError(part_id, sorted(self.parts)) from None

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        """Break a part besides whatever else is broken in it: for good, or (`intermittent`, a
        presence 0 < p < 1) in a seeded fraction p of cycles, this one drawn at once. Raises
        UnknownPartError, UnknownFailureError or ValueError (naming `intermittent`) for nonsense."""
        part = self.part(part_id)
        check_failure(self.kinds[part_id], failure)
        check_intermittent(intermittent)
        if failure == SENSOR_FAULT and SENSOR_FAULT not in part.held:  # broken once, not again
            part.break_sensor(self, self._noise[part_id])
        present = intermittent is None or self._intermittency[part_id].random() < intermittent
        part.inject(failure, intermittent, present=present)
        self._bus = self._solve()

    def repair(self, part_id: str) -> None:
        """A new part: every failure it held is mended."""
        self.part(part_id).repair()
        self._bus = self._solve()

    def failures(self) -> dict[str, frozenset[str]]:
        """What is really broken, intermittent or not (for tests and the demo script)."""
        return {pid: frozenset(p.held) for pid, p in self.parts.items() if p.held}

    def present(self) -> dict[str, frozenset[str]]:
        """The failures acting in this cycle (an intermittent one is absent in some)."""
        return {pid: p.present for pid, p in self.parts.items() if p.present}

    # --- physics -------------------------------------------------------------------------------

    def advance(self, dt_s: float) -> None:
        """Let dt pass (one cycle): intermittent failures come or go, the driver acts, the
        battery charges or drains, the bus settles."""
        self.time_s += dt_s
        if self._crank_until is not None and self.time_s >= self._crank_until - 1e-9:
            self._running = self._crank_ok  # the engine caught, or the starter gave up
            self._crank_end = self._crank_until
            self._crank_until = None
        for part_id, part in self.parts.items():  # a new cycle for intermittent failures
            part.roll(self._intermittency[part_id])
        self._inputs = self._drive()
        self._bus = self._solve()
        self.battery.settle(self._bus.battery_in_a, dt_s)
        self.battery.warm(self._inputs.ambient_c, dt_s)

    def _drive(self) -> DriverInputs:
        """The driver's inputs now, with the engine as it really is (cranking, or not caught)."""
        inputs = driver_inputs(self.profile, self.time_s, self.ignition, self.weather)
        if self._crank_until is not None:
            return replace(inputs, engine_rpm=CRANK_RPM)
        if self.ignition is Ignition.RUN and not self._running:
            return replace(inputs, engine_rpm=0.0)
        return inputs

    @property
    def inputs(self) -> DriverInputs:
        return self._inputs

    @property
    def bus(self) -> BusState:
        return self._bus

    def _part_loads(self) -> Loads:
        conductance = 0.0
        led = 0.0
        for part in self.parts.values():
            part_conductance, part_led = part.draw(self._inputs)
            conductance += part_conductance
            led += part_led
        # A key at `run` with the engine stopped loads the bus as a key at `on`.
        key = self.ignition if self._running or self.cranking else Ignition.ON
        key = Ignition.OFF if self.ignition is Ignition.OFF else key
        if self.cranking:
            conductance += 1.0 / STARTER_OHM
        return Loads(BASE_LOAD_A[key], conductance, led)

    def solve(self, *, field_off: bool = False, extra_a: float = 0.0) -> BusState:
        """The bus as it would be with the alternator's field off and/or a test load added."""
        loads = self._loads
        if extra_a:
            loads = Loads(loads.fixed_a + extra_a, loads.conductance_s, loads.led_a)
        rpm = self._inputs.engine_rpm
        capacity = 0.0 if field_off else self.alternator.capacity_a(rpm)
        return solve_bus(self.battery, loads, capacity, self.alternator.setpoint_v)

    def _solve(self) -> BusState:
        """The bus now; the loads are summed once per change of state, not per question."""
        self._loads = self._part_loads()
        self.alternator.commanded_v = commanded_setpoint(
            self.alternator.config.setpoint_v,
            self.battery.soc,
            self.battery.temperature_c,
            self.since_crank_s if self._running else None,
        )
        return self.solve()

    def snapshot(self) -> CarSnapshot:
        return CarSnapshot(
            time_s=self.time_s,
            ignition=self.ignition,
            engine_rpm=self._inputs.engine_rpm,
            bus_v=self._bus.voltage_v,
            battery_soc=self.battery.soc,
            alternator_a=self._bus.alternator_a,
            lamps_on=self._inputs.lamps_on,
            cranking=self.cranking,
            ambient_c=self._inputs.ambient_c,
            battery_temperature_c=self.battery.temperature_c,
            setpoint_v=self.alternator.commanded_v,
        )

    # --- test steps and sensors ----------------------------------------------------------------

    def measure(self, part_id: str) -> Reading:
        """Carry out the part's test step and read its sensors.

        Raises NoResponseError when the part that takes the measurement does not answer.
        """
        part = self.part(part_id)
        # Who answers for this part: itself, or (for a lamp) the controller that measures it.
        answering = self._answered_by.get(part_id, part)
        if answering.silent:
            raise NoResponseError(part_id, answering.config.id)
        reading: Reading = part.reading(self, self._noise[part_id])
        return reading
