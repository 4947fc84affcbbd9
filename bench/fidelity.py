"""The fidelity report: `make fidelity` (or `.venv/bin/python -m bench.fidelity`). Prints a table
and writes bench/fidelity.json. No broker, no loop: the pure core on the workbench
(`carlightd.tools.workbench.Bench`), cycle by cycle, over two questions.

1. Does a healthy car stay quiet? Randomized long drives, one per seed: the key turned off, on and
   to run (a start, which cranks where the car models cranking) in random segments, the ambient
   temperature drawn in -20..+40 °C, the battery's initial charge in 30..100 %, noise in 0..2,
   either drive profile. Every `fault_pending` and `fault_confirmed` is a false alarm, counted per
   million part-cycles (one part judged in one cycle), except a `discharged` battery whose true
   charge really fell below the specification's flat level (counted apart, as true alarms).
2. Is every failure found and blamed on the right part? Every failure of every part (each kind's
   failures from the `KINDS` registry: a new kind is covered without a line here), injected alone
   on randomized drives (their conditions drawn as above) with the engine running (the key turned
   on, the engine started, a random warm-up, then the failure) and with the key on and the engine
   stopped; and a seeded set of double failures (plus the interactions worth a look, picked from
   the wiring) with the engine running. Each is checked against `bench/fidelity_spec.py`, a
   specification written from the wiring and workshop common sense, not from the diagnoser: the
   exact root set, the consequences, and nothing else raised, not even pending.

Work is spread over processes by seed (`--jobs`, default: every core); the figures depend only
on the seeds, never on the order the work finishes in.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.fidelity_spec import FLAT_SOC, Seen, Situation, Wiring, disagreements, expect
from carlightd.config import Settings
from carlightd.core.diagnoser import CycleReport
from carlightd.core.domain import Ignition, Kind
from carlightd.core.kinds import FAILURES
from carlightd.tools.workbench import Bench, settings

Profile = Literal["drive", "steady"]
PROFILES: tuple[Profile, Profile] = ("drive", "steady")
TEMPERATURE_C = (-20.0, 40.0)
INITIAL_SOC = (0.30, 1.00)
NOISE = (0.0, 2.0)


@dataclass(frozen=True)
class Conditions:
    """One drive's randomized conditions, all drawn from its seed."""

    seed: int
    profile: Profile
    noise: float
    initial_soc: float
    ambient_c: float

    @classmethod
    def draw(cls, seed: int, salt: str) -> Conditions:
        rng = random.Random(f"fidelity:{salt}:{seed}")
        return cls(
            seed=seed,
            profile=rng.choice(PROFILES),
            noise=round(rng.uniform(*NOISE), 3),
            initial_soc=round(rng.uniform(*INITIAL_SOC), 3),
            ambient_c=round(rng.uniform(*TEMPERATURE_C), 1),
        )


def _bench(conditions: Conditions, ignition: Ignition) -> tuple[Bench, bool]:
    """A car on the workbench in these conditions; also whether the car took the ambient
    temperature (it does once the simulated car models one)."""
    bench = Bench(
        seed=conditions.seed,
        noise=conditions.noise,
        ignition=ignition,
        profile=conditions.profile,
        settings_=_settings(),
    )
    bench.car.battery.soc = conditions.initial_soc
    return bench, _set_ambient(bench, conditions.ambient_c)


def _set_ambient(bench: Bench, ambient_c: float) -> bool:
    """Give the car its ambient temperature, through whatever the car offers for it."""
    car: Any = bench.car
    for name in ("set_ambient", "set_ambient_c", "set_temperature"):
        setter = getattr(car, name, None)
        if callable(setter):
            setter(ambient_c)
            return True
    for name in ("ambient_c", "temperature_c"):
        if hasattr(car, name):
            setattr(car, name, ambient_c)
            return True
    return False


@functools.cache
def _settings() -> Settings:
    """The packaged default car, loaded once per process."""
    return settings()


# --- 1. healthy drives -------------------------------------------------------------------------


def ignition_plan(seed: int, cycles: int) -> list[tuple[int, Ignition]]:
    """(cycle, key position) changes for one drive: parked, key on, driving, in random segments;
    a start from off passes through `on` for a few seconds, as a driver's key does."""
    rng = random.Random(f"fidelity:ignition:{seed}")
    plan: list[tuple[int, Ignition]] = []
    at = 0
    state = rng.choice([Ignition.OFF, Ignition.ON, Ignition.RUN])
    plan.append((0, state))
    while at < cycles:
        if state is Ignition.OFF:
            at += rng.randint(10, 240)
            state = Ignition.ON
        elif state is Ignition.ON:
            at += rng.randint(2, 90)
            state = rng.choice([Ignition.RUN, Ignition.RUN, Ignition.OFF])
        else:
            at += rng.randint(60, 900)
            state = rng.choice([Ignition.OFF, Ignition.ON])
        plan.append((at, state))
    return plan


def healthy_drive(seed: int, cycles: int) -> dict[str, Any]:
    conditions = Conditions.draw(seed, "healthy")
    plan = ignition_plan(seed, cycles)
    bench, ambient_applied = _bench(conditions, plan[0][1])
    changes = dict(plan[1:])
    parts = len(bench.car.parts)
    alarms: list[dict[str, Any]] = []
    true_alarms = 0
    lowest_soc = bench.car.battery.soc
    starts = 0
    no_starts = 0
    was_cranking = False
    for cycle in range(cycles):
        if cycle in changes:
            if changes[cycle] is Ignition.RUN:
                starts += 1
            bench.car.set_ignition(changes[cycle])
        report = bench.cycle()
        lowest_soc = min(lowest_soc, bench.car.battery.soc)
        cranking = bool(getattr(bench.car, "cranking", False))
        if was_cranking and not cranking and not _engine_running(bench):
            no_starts += 1  # the battery could not crank the engine
        was_cranking = cranking
        for event in report.events:
            if event.type not in ("fault_pending", "fault_confirmed"):
                continue
            if event.failure == "discharged" and lowest_soc < FLAT_SOC:
                true_alarms += 1  # the battery really is flat (fidelity_spec rule 7)
                continue
            alarms.append(
                {
                    "seed": seed,
                    "cycle": cycle,
                    "type": event.type,
                    "component": event.component,
                    "failure": event.failure,
                    "ignition": str(bench.car.ignition),
                    "conditions": conditions.__dict__,
                }
            )
    return {
        "seed": seed,
        "cycles": cycles,
        "part_cycles": cycles * parts,
        "starts": starts,
        "no_starts": no_starts,
        "alarms": alarms,
        "true_alarms": true_alarms,
        "lowest_true_soc": round(lowest_soc, 4),
        "ambient_applied": ambient_applied,
    }


# --- 2. failures ---------------------------------------------------------------------------------

Injected = tuple[tuple[str, str], ...]
START_AT_CYCLE = 2  # a failure case's engine is started this many cycles after the key is on


@dataclass(frozen=True)
class Case:
    name: str  # "single" or "double"
    seed: int
    injected: Injected
    ignition: Ignition
    warmup: int
    window: int


def single_cases(
    seeds: int, window: int, ignitions: tuple[Ignition, ...], warmup_max: int = 60
) -> list[Case]:
    """Every failure of every part, alone, with the engine running and with it stopped."""
    wiring = Wiring.of(_settings().components)
    cases: list[Case] = []
    for part, kind in wiring.kinds.items():
        for failure in FAILURES[Kind(kind)]:
            for ignition in ignitions:
                for index in range(seeds):
                    seed = 1000 + len(cases)
                    warmup = random.Random(f"fidelity:warmup:{seed}").randint(10, warmup_max)
                    cases.append(Case("single", seed, ((part, failure),), ignition, warmup, window))
                    del index
    return cases


def double_cases(count: int, window: int, warmup_max: int = 60, seed: int = 2026) -> list[Case]:
    """A seeded set of pairs of failures of two parts, plus the pairs worth a look whatever the
    seed gives: a dead controller with a lamp; a charging failure with a battery one; a blown fuse
    with a bulb out behind it and behind another fuse; a corroded ground with a lamp it serves
    and one it does not; two bulbs out behind one fuse."""
    wiring = Wiring.of(_settings().components)
    rng = random.Random(f"fidelity:doubles:{seed}")
    parts = sorted(wiring.kinds)
    pairs: list[Injected] = []
    while len(pairs) < count:
        a, b = rng.sample(parts, 2)
        fa = rng.choice(FAILURES[Kind(wiring.kinds[a])])
        fb = rng.choice(FAILURES[Kind(wiring.kinds[b])])
        pairs.append(((a, fa), (b, fb)))
    lamps = wiring.of_kind("lamp")
    for controller in wiring.of_kind("controller"):
        measured = [p for p, c in wiring.measured_by.items() if c == controller]
        if measured:
            pairs.append(((controller, "no_response"), (measured[0], "open_circuit")))
    for alternator in wiring.of_kind("alternator"):
        for battery in wiring.of_kind("battery"):
            pairs += [
                ((alternator, "no_output"), (battery, "discharged")),
                ((alternator, "undercharging"), (battery, "weak")),
                ((alternator, "sensor_fault"), (battery, "discharged")),
                ((battery, "weak"), (alternator, "no_output")),
            ]
    for battery in wiring.of_kind("battery"):
        if lamps:
            pairs.append(((battery, "dead_cell"), (lamps[0], "degraded")))
    for fuse, fed in wiring.feeds.items():
        fed_lamps = [p for p in fed if wiring.kinds.get(p) == "lamp"]
        elsewhere = [p for p in lamps if p not in fed]
        if fed_lamps:
            pairs.append(((fuse, "blown"), (fed_lamps[0], "open_circuit")))
        if elsewhere:
            pairs.append(((fuse, "blown"), (elsewhere[0], "open_circuit")))
        if len(fed_lamps) >= 2:
            pairs.append(((fed_lamps[0], "open_circuit"), (fed_lamps[1], "open_circuit")))
    for ground, served in wiring.serves.items():
        served_lamps = [p for p in served if wiring.kinds.get(p) == "lamp"]
        elsewhere = [p for p in lamps if p not in served]
        if served_lamps:
            pairs.append(((ground, "high_resistance"), (served_lamps[0], "open_circuit")))
        if elsewhere:
            pairs.append(((ground, "high_resistance"), (elsewhere[0], "open_circuit")))
    cases = []
    for index, pair in enumerate(pairs):
        case_seed = 5000 + index
        warmup = random.Random(f"fidelity:warmup:{case_seed}").randint(10, warmup_max)
        cases.append(Case("double", case_seed, pair, Ignition.RUN, warmup, window))
    return cases


def run_case(case: Case) -> dict[str, Any]:
    conditions = Conditions.draw(case.seed, case.name)
    # The key is turned on; for a running engine it is then turned to start (cranking where the
    # car models it) a few seconds later, and the failure appears after the warm-up.
    bench, _ = _bench(conditions, Ignition.ON)
    early: list[str] = []
    for cycle in range(case.warmup):
        if cycle == START_AT_CYCLE and case.ignition is Ignition.RUN:
            bench.car.set_ignition(Ignition.RUN)
        report = bench.cycle()
        early += [f"{f.component} {f.failure} {f.status}" for f in report.faults]
    for part, failure in case.injected:
        bench.car.inject(part, failure)
    seen = Seen()
    first_confirmed: dict[tuple[str, str], int] = {}
    lowest_soc = bench.car.battery.soc
    engine_running = True
    for cycle in range(1, case.window + 1):
        report = bench.cycle()
        lowest_soc = min(lowest_soc, bench.car.battery.soc)
        engine_running = engine_running and _engine_running(bench)
        _observe(report, seen, first_confirmed, cycle)
    situation = Situation(engine_running=engine_running, lowest_true_soc=lowest_soc)
    outcomes = expect(Wiring.of(bench.settings.components), case.injected, situation)
    verdicts = [(outcome, disagreements(outcome, seen)) for outcome in outcomes]
    best, problems = min(verdicts, key=lambda v: len(v[1]))
    if early:
        problems = [f"raised before the failure: {', '.join(sorted(set(early)))}", *problems]
    to_confirm = [
        cycle for key, cycle in first_confirmed.items() if best.roots.get(key[0]) == key[1]
    ]
    return {
        "name": case.name,
        "seed": case.seed,
        "injected": [list(pair) for pair in case.injected],
        "ignition": str(case.ignition),
        "conditions": conditions.__dict__,
        "expected": best.as_json(),
        "seen": _seen_json(seen),
        "exact": not problems,
        "missed": any(p.startswith("missed") for p in problems),
        "problems": problems,
        "cycles_to_confirm": max(to_confirm) if to_confirm and best.roots else None,
        "engine_running": engine_running,
    }


def _engine_running(bench: Bench) -> bool:
    """The truth: the engine turns by itself (not stopped, not only cranked by the starter)."""
    running = getattr(bench.car, "engine_running", None)
    if isinstance(running, bool):
        return running
    return bench.car.snapshot().engine_rpm > 0


def _observe(
    report: CycleReport, seen: Seen, first: dict[tuple[str, str], int], cycle: int
) -> None:
    for fault in report.faults:
        key = (fault.component, fault.failure)
        seen.raised.setdefault(key, set()).add(fault.consequence_of)
        if fault.status == "confirmed":
            seen.confirmed.add(key)
            seen.confirmed_as.setdefault(key, set()).add(fault.consequence_of)
            first.setdefault(key, cycle)


def _seen_json(seen: Seen) -> list[dict[str, Any]]:
    return [
        {
            "component": part,
            "failure": failure,
            "confirmed": (part, failure) in seen.confirmed,
            "consequence_of": sorted(c or "" for c in shown),
        }
        for (part, failure), shown in sorted(seen.raised.items())
    ]


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    what: str  # "healthy" or "case"
    seed: int = 0
    cycles: int = 0
    case: Case | None = None


def _work(task: Task) -> tuple[str, dict[str, Any]]:
    if task.what == "healthy":
        return task.what, healthy_drive(task.seed, task.cycles)
    assert task.case is not None
    return task.what, run_case(task.case)


def _results(tasks: list[Task], jobs: int) -> Iterator[tuple[str, dict[str, Any]]]:
    if jobs <= 1:
        yield from map(_work, tasks)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(_work, tasks, chunksize=1)


def per_million(count: int, part_cycles: int) -> float:
    return round(count * 1_000_000 / part_cycles, 3) if part_cycles else 0.0


def run(
    *,
    drives: int,
    cycles: int,
    single_seeds: int,
    doubles: int,
    window: int,
    jobs: int,
    ignitions: tuple[Ignition, ...] = (Ignition.RUN, Ignition.ON),
    warmup_max: int = 60,
    progress: bool = True,
) -> dict[str, Any]:
    started = time.monotonic()
    singles = single_cases(single_seeds, window, ignitions, warmup_max)
    pairs = double_cases(doubles, window, warmup_max)
    tasks = [Task("healthy", seed=seed, cycles=cycles) for seed in range(1, drives + 1)]
    tasks += [Task("case", case=case) for case in singles + pairs]
    healthy: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    # On a terminal one line rewritten twice a second; in a log (CI) a line every 15 s.
    live = sys.stderr.isatty()
    prefix = "\r" if live else ""
    every_s = 0.5 if live else 15.0
    shown = time.monotonic()
    for done, (what, result) in enumerate(_results(tasks, jobs), start=1):
        (healthy if what == "healthy" else cases).append(result)
        if progress and (time.monotonic() - shown >= every_s or done == len(tasks)):
            shown = time.monotonic()
            alarms = sum(len(h["alarms"]) for h in healthy)
            wrong = sum(1 for c in cases if not c["exact"])
            print(
                f"{prefix}fidelity: {done}/{len(tasks)} tasks · drives {len(healthy)}/{drives} "
                f"({alarms} false alarms) · failure cases {len(cases)}/{len(tasks) - drives} "
                f"({wrong} not as specified) · {time.monotonic() - started:.0f} s",
                end="" if live else "\n",
                file=sys.stderr,
                flush=True,
            )
    if progress and live:
        print(file=sys.stderr)
    healthy.sort(key=lambda h: h["seed"])
    cases.sort(key=lambda c: (c["name"], c["seed"]))
    report = summarize(healthy, cases)
    report["parameters"] = {
        "drives": drives,
        "cycles_per_drive": cycles,
        "single_seeds_per_failure": single_seeds,
        "random_doubles": doubles,
        "window_cycles": window,
        "warmup_cycles": [10, warmup_max],
        "single_ignitions": [str(ignition) for ignition in ignitions],
        "temperature_c": list(TEMPERATURE_C),
        "initial_soc": list(INITIAL_SOC),
        "noise": list(NOISE),
        "profiles": list(PROFILES),
        "ambient_temperature_applied": all(h["ambient_applied"] for h in healthy),
    }
    report["machine"] = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "jobs": jobs,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    return report


def summarize(healthy: list[dict[str, Any]], cases: list[dict[str, Any]]) -> dict[str, Any]:
    part_cycles = sum(h["part_cycles"] for h in healthy)
    alarms = [a for h in healthy for a in h["alarms"]]
    pending = sum(1 for a in alarms if a["type"] == "fault_pending")
    confirmed = sum(1 for a in alarms if a["type"] == "fault_confirmed")
    singles = [c for c in cases if c["name"] == "single"]
    doubles = [c for c in cases if c["name"] == "double"]
    latencies = [c["cycles_to_confirm"] for c in singles if c["cycles_to_confirm"] is not None]
    exact = sum(1 for c in singles if c["exact"])
    matching = sum(1 for c in doubles if c["exact"])
    return {
        "healthy": {
            "drives": len(healthy),
            "cycles": sum(h["cycles"] for h in healthy),
            "part_cycles": part_cycles,
            "starts": sum(h["starts"] for h in healthy),
            "starts_that_did_not_catch": sum(h["no_starts"] for h in healthy),
            "pending_false_alarms": pending,
            "confirmed_false_alarms": confirmed,
            "pending_per_million_part_cycles": per_million(pending, part_cycles),
            "confirmed_per_million_part_cycles": per_million(confirmed, part_cycles),
            "true_discharged_alarms": sum(h["true_alarms"] for h in healthy),
            "alarms": alarms,
        },
        "single": {
            "cases": len(singles),
            "exact": exact,
            "isolation_accuracy": round(exact / len(singles), 4) if singles else None,
            "missed_detections": sum(1 for c in singles if c["missed"]),
            "cycles_to_confirm_median": statistics.median(latencies) if latencies else None,
            "cycles_to_confirm_worst": max(latencies) if latencies else None,
            "misses": [_miss(c) for c in singles if not c["exact"]],
            "all": [_brief(c) for c in singles],
        },
        "double": {
            "cases": len(doubles),
            "matching": matching,
            "agreement": round(matching / len(doubles), 4) if doubles else None,
            "missed_detections": sum(1 for c in doubles if c["missed"]),
            "misses": [_miss(c) for c in doubles if not c["exact"]],
            "all": [_brief(c) for c in doubles],
        },
        "targets": {
            "zero_confirmed_false_alarms": confirmed == 0,
            "zero_pending_false_alarms": pending == 0,
            "exact_single_isolation": bool(singles) and exact == len(singles),
            "every_double_as_specified": bool(doubles) and matching == len(doubles),
        },
    }


def _miss(case: dict[str, Any]) -> dict[str, Any]:
    keys = ("seed", "injected", "ignition", "conditions", "expected", "seen", "problems")
    return {key: case[key] for key in keys}


def _brief(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": case["seed"],
        "injected": case["injected"],
        "ignition": case["ignition"],
        "exact": case["exact"],
        "cycles_to_confirm": case["cycles_to_confirm"],
    }


def table(report: dict[str, Any]) -> str:
    h, s, d = report["healthy"], report["single"], report["double"]
    rows = [
        (
            "part-cycles of healthy drives",
            f"{h['part_cycles']:,} ({h['drives']} drives, {h['starts']} starts)",
            "≥ 1,000,000",
        ),
        (
            "confirmed false alarms per million part-cycles",
            f"{h['confirmed_per_million_part_cycles']} ({h['confirmed_false_alarms']})",
            "0",
        ),
        (
            "pending false alarms per million part-cycles",
            f"{h['pending_per_million_part_cycles']} ({h['pending_false_alarms']})",
            "0",
        ),
        (
            "single failures isolated exactly",
            f"{s['exact']} / {s['cases']} ({_percent(s['isolation_accuracy'])})",
            "100 %",
        ),
        ("single failures missed", str(s["missed_detections"]), "0"),
        (
            "cycles to confirm (median / worst)",
            f"{s['cycles_to_confirm_median']} / {s['cycles_to_confirm_worst']}",
            "",
        ),
        (
            "double failures as specified",
            f"{d['matching']} / {d['cases']} ({_percent(d['agreement'])})",
            "all",
        ),
        ("double failures missed", str(d["missed_detections"]), "0"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  {'result':<34}  target", "-" * (width + 46)]
    lines += [f"{name:<{width}}  {result:<34}  {target}" for name, result, target in rows]
    for label, misses in (("single", s["misses"]), ("double", d["misses"])):
        for miss in misses:
            injected = " + ".join(f"{p} {f}" for p, f in miss["injected"])
            lines.append(
                f"  {label} miss: seed {miss['seed']} {injected} (key {miss['ignition']}): "
                + "; ".join(miss["problems"])
            )
    for alarm in h["alarms"][:20]:
        lines.append(
            f"  false alarm: drive seed {alarm['seed']} cycle {alarm['cycle']} "
            f"{alarm['type']} {alarm['component']} {alarm['failure']} (key {alarm['ignition']})"
        )
    if not report["parameters"]["ambient_temperature_applied"]:
        lines.append("  note: the simulated car takes no ambient temperature yet (drawn, not used)")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drives", type=int, default=120, help="healthy drives (one seed each)")
    parser.add_argument("--cycles", type=int, default=1500, help="cycles per healthy drive")
    parser.add_argument("--single-seeds", type=int, default=3, help="drives per single failure")
    parser.add_argument("--doubles", type=int, default=150, help="random double failures")
    parser.add_argument("--window", type=int, default=600, help="cycles watched after a failure")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fidelity.json"))
    args = parser.parse_args()
    report = run(
        drives=args.drives,
        cycles=args.cycles,
        single_seeds=args.single_seeds,
        doubles=args.doubles,
        window=args.window,
        jobs=args.jobs,
    )
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"written to {args.out} in {report['machine']['elapsed_s']} s")


if __name__ == "__main__":
    main()
