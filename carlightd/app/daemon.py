"""Assembling the daemon from a configuration: car, sensors, diagnoser, memory, loop."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from carlightd import config, logs
from carlightd.app import health
from carlightd.app.cycle import CycleRunner
from carlightd.app.systemd import Notifier
from carlightd.config import Settings
from carlightd.core.diagnoser import CycleReport, Diagnoser
from carlightd.core.domain import Ignition, Kind
from carlightd.core.memory import FaultEvent, FaultMemory
from carlightd.outputs import ConnectedOutput, Output
from carlightd.outputs.mqtt.commands import CommandHandler
from carlightd.outputs.mqtt.publisher import DaemonLink, Publisher
from carlightd.outputs.scan_tool.output import ScanToolOutput
from carlightd.runtime import signals
from carlightd.sources.simulated.car import Car
from carlightd.sources.simulated.source import SimulatedSource
from carlightd.store import statelock
from carlightd.store.outbox import Outbox
from carlightd.store.state import (
    StateRejectedError,
    StateStore,
    describe_error,
    make_dir,
    printable,
)

log = logs.get("carlightd.daemon")
HEARTBEAT_EVERY_S = 1.0


@dataclass
class Daemon:
    settings: Settings
    source: SimulatedSource
    diagnoser: Diagnoser
    runner: CycleRunner
    lock: statelock.StateLock | None = None

    @property
    def car(self) -> Car:
        return self.source.car

    async def clear_faults(self) -> CycleReport:
        return await self.runner.clear_faults()

    def close(self) -> None:
        """Give the state directory up (another daemon may then start on it); safe to repeat."""
        if self.lock is not None:
            self.lock.release()


def make_car(settings: Settings, ignition: Ignition) -> Car:
    simulation = settings.simulation
    return Car(
        settings.components,
        seed=simulation.seed,
        noise=simulation.noise,
        ignition=ignition,
        profile=simulation.profile,
    )


def build(
    settings: Settings,
    outputs: Sequence[Output],
    on_cycle: Callable[[CycleReport, bool], None] = lambda report, on_time: None,
) -> Daemon:
    """Raises StateDirectoryInUseError if another daemon holds the state directory; any other
    trouble with the directory is logged and kept in `runner.store.problem`, never a crash."""
    state_dir = settings.diagnostics.state_dir
    try:
        make_dir(state_dir)
    except OSError as error:
        # The daemon still diagnoses and publishes, without a memory that lasts, and says so.
        log.error("state_dir_unusable", path=printable(state_dir), error=describe_error(error))
    # Before anything in the directory is read or written: a second daemon stops here.
    lock = statelock.acquire(state_dir)
    try:
        return _assemble(settings, outputs, on_cycle, lock)
    except BaseException:
        lock.release()
        raise


def _assemble(
    settings: Settings,
    outputs: Sequence[Output],
    on_cycle: Callable[[CycleReport, bool], None],
    lock: statelock.StateLock,
) -> Daemon:
    diagnostics = settings.diagnostics
    source = SimulatedSource(make_car(settings, settings.vehicle.ignition))
    memory = FaultMemory(
        diagnostics.confirm_cycles,
        diagnostics.heal_cycles,
        aging_cycles=diagnostics.aging_cycles,
    )
    store = StateStore(diagnostics.state_dir, settings.vehicle.id)
    if lock.locked and (removed := store.remove_leftovers()):
        log.info("state_leftovers_removed", files=removed, path=printable(diagnostics.state_dir))
    undelivered: list[FaultEvent] = []
    try:
        undelivered = store.load(memory)
    except StateRejectedError as error:
        log.error(
            "state_rejected",
            path=printable(error.path),
            problem=error.problem,
            moved_to=None if error.moved_to is None else printable(error.moved_to),
        )
    else:
        if memory.records or memory.seq:
            log.info(
                "state_restored",
                faults=len(memory.records),
                seq=memory.seq,
                undelivered_events=len(undelivered),
            )
    diagnoser = Diagnoser(settings.components, memory)
    runner = CycleRunner(
        source=source,
        diagnoser=diagnoser,
        store=store,
        outputs=outputs,
        cycle_s=diagnostics.cycle_s,
        read_timeout_s=diagnostics.read_timeout_s,
        outbox=Outbox(undelivered),
        on_cycle=on_cycle,
    )
    # Saved at once: a disk that cannot take the state is reported from the first cycle, not at
    # the first fault.
    runner.save()
    return Daemon(settings, source, diagnoser, runner, lock)


class CarWorkshop:
    """What commands may do (`carlightd.core.ports.Workshop`), on the daemon's simulated car and
    fault memory. The car is looked up at each call: a reload may have replaced it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def inject(self, part_id: str, failure: str, intermittent: float | None = None) -> None:
        self.daemon.car.inject(part_id, failure, intermittent)

    def repair(self, part_id: str) -> None:
        self.daemon.car.repair(part_id)

    def set_ignition(self, ignition: Ignition) -> None:
        self.daemon.car.set_ignition(ignition)

    async def clear_faults(self) -> int:
        return len((await self.daemon.clear_faults()).events)


def _kinds(settings: Settings) -> set[Kind]:
    return {Kind(component.kind) for component in settings.components}


class Service:
    """The daemon on the wire: the cycle loop and the MQTT publisher, stopped together; it tells
    systemd how it is doing, writes a heartbeat, and takes a new configuration on reload."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.settings = settings
        self.heartbeat = heartbeat
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        outputs: list[Output] = []
        # What is logged while the daemon is built (a rejected state file, a discovery change)
        # names its vehicle too, whoever builds it.
        with logs.vehicle_bound(settings.vehicle.id):
            self.daemon = build(settings, outputs, on_cycle=self._after_cycle)
            runner, memory = self.daemon.runner, self.daemon.diagnoser.memory
            self._loaded_seq = memory.seq
            workshop = CarWorkshop(self.daemon)
            self.handler = CommandHandler(workshop, enabled=settings.commands.enabled)
            link = DaemonLink(
                outbox=runner.outbox,
                persist=runner.save,
                event_seq=lambda: memory.seq,
                problems=self._problems,
                continue_above=self._continue_above,
                state_saved=lambda: self.daemon.runner.store.problem is None,
            )
            self.publisher = Publisher(settings, self.handler, link)
            self.scan_tool = ScanToolOutput(
                settings.scan_tool, settings.vehicle.vin, _kinds(settings), workshop
            )
        # The publisher carries the commands whose effects it then reports: it joins the loop's
        # outputs once it exists. Every output with a life of its own runs beside the loop.
        outputs.extend([self.publisher, self.scan_tool])
        self.connected_outputs: list[ConnectedOutput] = [self.publisher, self.scan_tool]
        self.stop = asyncio.Event()
        self._ready = False
        self._status = ""
        self._heartbeat_at = float("-inf")
        self._beat_problem: str | None = None
        self._heartbeat_failing = False

    def _problems(self) -> list[str]:
        """What is wrong with the daemon itself, for ROOT/status."""
        problem = self.daemon.runner.store.problem
        return ([problem] if problem else []) + self.scan_tool.problems()

    def _continue_above(self, broker_seq: int) -> None:
        """The broker remembers events up to `broker_seq`, more than the state file said (it was
        not saved, or deleted): this run's events so far, never published, are renumbered above
        it, and the sequence continues from there. A gap, never a reuse."""
        if broker_seq <= self._loaded_seq:
            return
        shift = broker_seq - self._loaded_seq
        memory = self.daemon.diagnoser.memory
        moved = self.daemon.runner.outbox.renumber_after(self._loaded_seq, shift)
        memory.seq += shift
        log.warning(
            "event_seq_continues_above_broker",
            state_file_seq=self._loaded_seq,
            broker_seq=broker_seq,
            renumbered_events=moved,
            next_seq=memory.seq + 1,
        )
        self._loaded_seq = broker_seq
        self.daemon.runner.save()

    def _status_line(self, report: CycleReport) -> str:
        mqtt = "connected" if self.publisher.connected else "disconnected"
        line = f"cycle {report.cycle}, {len(report.faults)} faults, MQTT {mqtt}"
        problem = self.daemon.runner.store.problem
        if problem is not None:
            line = f"{line}, STATE NOT SAVED: {problem}"
        for scan_tool_problem in self.scan_tool.problems():
            line = f"{line}, {scan_tool_problem}"
        return line

    def _after_cycle(self, report: CycleReport, on_time: bool) -> None:
        status = self._status_line(report)
        if not self._ready:
            self.notifier.ready(status)
            self._ready = True
        elif status.split(", ", 1)[1] != self._status.split(", ", 1)[-1]:
            self.notifier.status(status)  # only when faults, connection or state problem change
        self._status = status
        if on_time:  # a loop that runs late or not at all stops the pings: systemd steps in
            self.notifier.watchdog()
        # At most one heartbeat file a second (a fast cycle need not mean a busy disk), and at
        # once when the state problem comes or goes.
        now = time.monotonic()
        problem = self.daemon.runner.store.problem
        if not self.heartbeat:
            return
        if now - self._heartbeat_at < HEARTBEAT_EVERY_S and problem == self._beat_problem:
            return
        self._heartbeat_at = now
        self._beat_problem = problem
        state_dir = self.settings.diagnostics.state_dir
        try:
            health.write(
                state_dir,
                health.Heartbeat(
                    at=report.at,
                    cycle=report.cycle,
                    cycle_s=self.daemon.runner.cycle_s,
                    mqtt_connected=self.publisher.connected,
                    faults=len(report.faults),
                    state_problem=problem,
                ),
            )
        except OSError as error:
            # Once, not every second: a read-only disk stays read-only for a while.
            if not self._heartbeat_failing:
                log.error(
                    "heartbeat_failed", path=printable(state_dir), error=describe_error(error)
                )
            self._heartbeat_failing = True
        else:
            if self._heartbeat_failing:
                log.info("heartbeat_recovered", path=printable(state_dir))
            self._heartbeat_failing = False

    def close(self) -> None:
        """Give the state directory up; the end of `run` does it (and the kernel, on any exit)."""
        self.daemon.close()

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP). A bad one is logged and the old one stays."""
        self.notifier.reloading()
        try:
            new = config.load(self.config_path)
        except config.ConfigError as error:
            log.error(
                "reload_rejected",
                source=error.source,
                problems=[f"{path}: {message}" for path, message in error.problems],
            )
            self.notifier.ready(self._status or "reload rejected")
            return False
        applied, refused = self._apply(new)
        log.info("reloaded", applied=applied, needs_restart=refused)
        self.notifier.ready(self._status or "reloaded")
        return True

    def _apply(self, new: Settings) -> tuple[list[str], list[str]]:
        old = self.settings
        applied: list[str] = []
        refused: list[str] = []
        # Identity: changing it live would mix two cars' fault memories and state files. The
        # scan-tool servers keep their sockets and bus until a restart.
        for name, before, after in (
            ("vehicle.id", old.vehicle.id, new.vehicle.id),
            ("diagnostics.state_dir", old.diagnostics.state_dir, new.diagnostics.state_dir),
            ("scan_tool", old.scan_tool, new.scan_tool),
        ):
            if before != after:
                refused.append(name)
        if refused:  # keep the identity of the running car and its servers; apply the rest
            new = new.model_copy(
                update={
                    "vehicle": new.vehicle.model_copy(update={"id": old.vehicle.id}),
                    "diagnostics": new.diagnostics.model_copy(
                        update={"state_dir": old.diagnostics.state_dir}
                    ),
                    "scan_tool": old.scan_tool,
                }
            )
        runner, memory = self.daemon.runner, self.daemon.diagnoser.memory
        if new.components != old.components or new.simulation.seed != old.simulation.seed:
            # A new simulated car, swapped in between two cycles; the fault memory is kept for
            # the parts it still has.
            runner.between_cycles(lambda: self._replace_car(new))
            applied.append("components")
        car = self.daemon.car
        diagnostics = new.diagnostics
        if diagnostics != old.diagnostics:
            runner.set_period(diagnostics.cycle_s, diagnostics.read_timeout_s)
            memory.confirm_cycles = diagnostics.confirm_cycles
            memory.heal_cycles = diagnostics.heal_cycles
            applied.append("diagnostics")
        if new.simulation != old.simulation:
            car.profile = new.simulation.profile
            car.set_noise(new.simulation.noise)
            applied.append("simulation")
        if new.commands != old.commands:
            self.handler.enabled = new.commands.enabled
            applied.append("commands")
        if new.vehicle.vin != old.vehicle.vin:
            self.scan_tool.set_vin(new.vehicle.vin)
            applied.append("vehicle.vin")
        if new.vehicle.ignition != old.vehicle.ignition:
            applied.append("vehicle.ignition (the initial key position; no effect until restart)")
        self.settings = new
        self.daemon.settings = new
        if new.mqtt != old.mqtt:
            self.publisher.reconfigure(new)  # reconnects; the fault memory stays as it is
            applied.append("mqtt")
        else:
            self.publisher.settings = new
            self.publisher.telemetry_s = diagnostics.telemetry_s
            if new.homeassistant != old.homeassistant or new.components != old.components:
                # Discovery on, off (removes the entities), switched between modes, or parts
                # added and removed.
                self.publisher.announce_to_home_assistant()
                applied.append("homeassistant")
        return applied, refused

    def _replace_car(self, settings: Settings) -> None:
        old = self.daemon.car
        car = make_car(settings, old.ignition)  # the key stays where it is
        runner = self.daemon.runner
        self.daemon.source.replace_car(car)
        self.publisher.forget_parts(set(old.parts) - set(car.parts))
        before = len(self.daemon.diagnoser.memory.records)
        self.daemon.diagnoser.replace_parts(settings.components, runner.wall_clock())
        self.scan_tool.set_kinds(_kinds(settings))
        log.info(
            "car_replaced",
            components=len(settings.components),
            faults_forgotten=before - len(self.daemon.diagnoser.memory.records),
        )

    async def run(self) -> None:
        logs.bind_vehicle(self.settings.vehicle.id)  # in this task: its child tasks inherit it
        log.info(
            "started",
            vehicle=self.settings.vehicle.id,
            components=len(self.settings.components),
            cycle_s=self.settings.diagnostics.cycle_s,
            ignition=str(self.settings.vehicle.ignition),
            root=self.publisher.topics.root,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.daemon.runner.run(self.stop), name="cycle")
                for output in self.connected_outputs:
                    group.create_task(output.run(self.stop), name=output.name)
        except BaseException:
            # Not a clean stop: whatever failed, `online` must not outlive the daemon.
            log.error("stopping_after_failure", cycles=self.daemon.diagnoser.cycle)
            self.notifier.stopping()
            await asyncio.shield(self.publisher.say_offline())
            raise
        finally:
            self.notifier.stopping()
            self.close()  # the state directory is free for the next daemon
        log.info("stopped", cycles=self.daemon.diagnoser.cycle)


async def run(settings: Settings, config_path: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT; the entry point owns the signal handlers, not the library."""
    logs.bind_vehicle(settings.vehicle.id)  # one car per process: its building is named too
    service = Service(settings, config_path=config_path)
    # Everything built so far lives as long as the process: keep the collector from walking it on
    # every collection (each cycle makes a few thousand short-lived objects).
    gc.collect()
    gc.freeze()

    def stop() -> None:
        service.notifier.stopping()
        service.stop.set()

    # Once the daemon has stopped and said `offline`, a late second Ctrl-C (or SIGTERM) must not
    # turn that clean stop into a KeyboardInterrupt on the way out of the process.
    with signals.stopping(
        stop, also={signal.SIGHUP: service.reload}, ignore_after=signals.STOP_SIGNALS
    ):
        await service.run()
