"""What a human would say is wrong with the car: the specification the fidelity report
(`bench/fidelity.py`) checks the diagnosis against.

Written from the car's wiring (which controller measures which lamp, which fuse feeds and which
ground serves which part, read from the configuration) and from workshop common sense, never from
the diagnoser's code: no import of the core's isolation, causal tables or self-tests. Where the
diagnosis and this file disagree, one of them is wrong, and the report lists the case.

The rules, each as a mechanic would put it:
1. Whatever was broken is a root cause with that failure, unless a rule below says otherwise.
2. With the engine stopped, nobody can tell whether the alternator charges: its charging failures
   (`no_output`, `undercharging`, `overcharging`, `diode_failure`) go unseen and nothing is blamed
   for them. A broken alternator *sensor* can still be seen (it reads what cannot be).
3. A controller that does not answer (`no_response`) leaves every part it measures unread: their
   own failures go unseen, and they are never blamed. A fuse or a ground has no sense of its own
   (nothing measures the voltage after a fuse or across a ground point): it is known only through
   the lamps it feeds or serves, so behind a silent controller its failure may go unseen too.
4. A blown fuse leaves every part it feeds without power (and a controller it feeds silent, so
   the parts that controller measures unread): their own failures are masked; they may be shown as
   consequences of the fuse, or untested. A broken current sense behind it may or may not be seen.
5. A corroded ground (`high_resistance`) dims everything it serves: those parts may be shown as its
   consequences; a served lamp that is itself `degraded` cannot be told from the dimming (seen or
   not, either is right); a bulb out, a short or a broken sense behind it is still that lamp's.
6. An alternator that does not charge (`no_output`, `undercharging`, `diode_failure`) with the
   engine running explains a flat battery: a `discharged` battery is its consequence (required if
   the battery was made flat, allowed if the drive drained it).
7. A battery really run flat during the case (true charge below `FLAT_SOC`) may be reported
   `discharged`: that is a true alarm, not a false one.
8. A battery with a dead cell and the engine stopped holds the bus near 10 V: too low to judge a
   lamp, so a lamp failure may go unseen then.
9. What no body controller can tell apart (no fuse or ground voltage sense): every part a fuse
   feeds being a lamp with its bulb out *is* a blown fuse to the eye, and every part a ground
   serves being a dim lamp *is* a corroded ground; either answer is right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A lead-acid battery below a fifth of its charge is flat by any workshop's standard (a starter
# battery is "recharge now" below about 12.2 V open-circuit, i.e. 20-30 %).
FLAT_SOC = 0.20

CHARGING = frozenset({"no_output", "undercharging", "overcharging", "diode_failure"})
NOT_CHARGING = frozenset({"no_output", "undercharging", "diode_failure"})


@dataclass(frozen=True)
class Wiring:
    """The car as its wiring diagram shows it, read from the configured parts."""

    kinds: dict[str, str]
    measured_by: dict[str, str]  # lamp -> the controller that measures it
    feeds: dict[str, tuple[str, ...]]  # fuse -> the parts it feeds
    serves: dict[str, tuple[str, ...]]  # ground -> the parts it serves

    @classmethod
    def of(cls, components: Sequence[Any]) -> Wiring:
        kinds = {c.id: str(c.kind) for c in components}
        measured_by = {
            c.id: c.controller
            for c in components
            if isinstance(getattr(c, "controller", None), str)
        }
        feeds = {c.id: tuple(c.feeds) for c in components if str(c.kind) == "fuse"}
        serves = {c.id: tuple(c.serves) for c in components if str(c.kind) == "ground"}
        return cls(kinds, measured_by, feeds, serves)

    def of_kind(self, kind: str) -> list[str]:
        return [part for part, k in self.kinds.items() if k == kind]

    def unpowered_by(self, fuse: str) -> set[str]:
        """What a blown `fuse` darkens or silences: what it feeds, and what a fed controller
        measures."""
        dark = set(self.feeds.get(fuse, ()))
        for part, controller in self.measured_by.items():
            if controller in dark:
                dark.add(part)
        return dark


@dataclass(frozen=True)
class Outcome:
    """One right answer. Every `roots` entry must be confirmed as a root cause with that failure,
    every `consequences` entry confirmed as a consequence of the part named; `optional_roots` and
    `may_follow` may show up (as a root with that failure / as a consequence of that part) or
    not; nothing else may be raised, not even pending."""

    roots: dict[str, str] = field(default_factory=dict)
    consequences: dict[str, str] = field(default_factory=dict)  # part -> its root part
    optional_roots: dict[str, str] = field(default_factory=dict)
    may_follow: dict[str, str] = field(default_factory=dict)  # part -> the root it would follow

    def as_json(self) -> dict[str, dict[str, str]]:
        return {
            "roots": dict(sorted(self.roots.items())),
            "consequences": dict(sorted(self.consequences.items())),
            "optional_roots": dict(sorted(self.optional_roots.items())),
            "may_follow": dict(sorted(self.may_follow.items())),
        }


@dataclass(frozen=True)
class Situation:
    """What else a mechanic knows about the case: the engine ran throughout after the failure
    appeared, and how low the battery's true charge went."""

    engine_running: bool
    lowest_true_soc: float


def expect(
    wiring: Wiring, injected: Sequence[tuple[str, str]], situation: Situation
) -> list[Outcome]:
    """The right answers for these failures in this situation (any one of them is right)."""
    broken = dict(injected)
    roots = dict(broken)
    optional: dict[str, str] = {}
    consequences: dict[str, str] = {}
    may_follow: dict[str, str] = {}

    # Rule 2: charging failures need a running engine to be seen.
    for part, failure in broken.items():
        if (
            wiring.kinds[part] == "alternator"
            and failure in CHARGING
            and not situation.engine_running
        ):
            del roots[part]
    # Rule 3: a silent controller's lamps are unread, and so is what is known only through them.
    unread: set[str] = set()
    for controller, failure in broken.items():
        if wiring.kinds[controller] == "controller" and failure == "no_response":
            unread |= {p for p, c in wiring.measured_by.items() if c == controller}
    for part in unread:
        roots.pop(part, None)
    for part, behind in (*wiring.feeds.items(), *wiring.serves.items()):
        if part in roots and behind and set(behind) <= unread:
            optional[part] = roots.pop(part)
    # Rule 4: a blown fuse masks what it feeds.
    for fuse, failure in broken.items():
        if wiring.kinds[fuse] == "fuse" and failure == "blown":
            for part in wiring.unpowered_by(fuse):
                own = roots.pop(part, None)
                if own == "sensor_fault":
                    optional[part] = own
                may_follow[part] = fuse
    # Rule 5: a corroded ground dims what it serves.
    for ground, failure in broken.items():
        if wiring.kinds[ground] == "ground" and failure == "high_resistance":
            for part in wiring.serves.get(ground, ()):
                if roots.get(part) == "degraded":
                    optional[part] = roots.pop(part)
                may_follow.setdefault(part, ground)
    # Rule 6: an alternator that does not charge explains a flat battery.
    for alternator, failure in broken.items():
        if (
            wiring.kinds[alternator] == "alternator"
            and failure in NOT_CHARGING
            and situation.engine_running
        ):
            for battery in wiring.of_kind("battery"):
                if roots.get(battery) == "discharged":
                    del roots[battery]
                    consequences[battery] = alternator
                elif battery not in roots:
                    may_follow[battery] = alternator
    # Rule 7: a battery really run flat may say so.
    if situation.lowest_true_soc < FLAT_SOC:
        for battery in wiring.of_kind("battery"):
            if battery not in roots and battery not in consequences and battery not in may_follow:
                optional[battery] = "discharged"
    # Rule 8: a dead cell with the engine stopped leaves the lamps unjudged.
    dead_cell = any(wiring.kinds[p] == "battery" and f == "dead_cell" for p, f in broken.items())
    if dead_cell and not situation.engine_running:
        for part in list(roots):
            if wiring.kinds[part] == "lamp":
                optional[part] = roots.pop(part)

    outcomes = [Outcome(roots, consequences, optional, may_follow)]
    outcomes += _look_alikes(wiring, broken, outcomes[0])
    return outcomes


def _look_alikes(wiring: Wiring, broken: Mapping[str, str], first: Outcome) -> list[Outcome]:
    """Rule 9: the other right answers where a fuse or a ground cannot be told from its lamps."""
    alternatives: list[Outcome] = []
    for fuse, fed in wiring.feeds.items():
        if fuse in broken or not fed:
            continue
        if all(first.roots.get(part) == "open_circuit" for part in fed):
            roots = {p: f for p, f in first.roots.items() if p not in fed}
            roots[fuse] = "blown"
            may_follow = {**first.may_follow, **dict.fromkeys(fed, fuse)}
            alternatives.append(
                Outcome(roots, first.consequences, first.optional_roots, may_follow)
            )
    for ground, served in wiring.serves.items():
        if ground in broken or not served:
            continue
        if all(first.roots.get(part) == "degraded" for part in served):
            roots = {p: f for p, f in first.roots.items() if p not in served}
            roots[ground] = "high_resistance"
            may_follow = {**first.may_follow, **dict.fromkeys(served, ground)}
            alternatives.append(
                Outcome(roots, first.consequences, first.optional_roots, may_follow)
            )
    return alternatives


@dataclass
class Seen:
    """What the diagnosis raised during a case: per (part, failure), whether it was confirmed and
    every `consequence_of` it was shown with (None: as a root cause)."""

    confirmed: set[tuple[str, str]] = field(default_factory=set)
    raised: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    confirmed_as: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)


def disagreements(outcome: Outcome, seen: Seen) -> list[str]:
    """Why what was seen is not this outcome (empty: it is)."""
    problems: list[str] = []
    for part, failure in sorted(outcome.roots.items()):
        if None not in seen.confirmed_as.get((part, failure), set()):
            problems.append(f"missed: {part} {failure} never confirmed as a root cause")
    for part, root in sorted(outcome.consequences.items()):
        if not any(root in shown for (p, _), shown in seen.confirmed_as.items() if p == part):
            problems.append(f"missed: {part} never confirmed as a consequence of {root}")
    for (part, failure), shown in sorted(seen.raised.items(), key=lambda item: item[0]):
        for consequence_of in sorted(shown, key=lambda c: c or ""):
            if consequence_of is None:
                right = outcome.roots.get(part) == failure or (
                    outcome.optional_roots.get(part) == failure
                )
            else:
                right = consequence_of in (
                    outcome.consequences.get(part),
                    outcome.may_follow.get(part),
                )
            if not right:
                as_what = "a root cause" if consequence_of is None else f"{consequence_of}'s"
                status = "confirmed" if (part, failure) in seen.confirmed else "pending"
                problems.append(f"wrong: {part} {failure} raised ({status}) as {as_what}")
    return problems
