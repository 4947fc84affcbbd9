"""Isolation: which failed part is the root cause, and which symptoms are only its consequences.

Parts depend on others (DESIGN §3): a lamp on the controller that measures it, on the supply, on
the fuse that feeds it and the ground point it returns through (which name their lamps:
`KindSpec.dependents`); the battery's charge on the alternator while the engine runs. Several
lamps failing together behind one fuse or ground are that part's failure: the fuse's and the
ground's own tests judge from their lamps' results (`CommonCauseTest.judge`, before isolation),
and the lamps' failures then become consequences of them here. Each kind declares its own links in
its module (`carlightd.core.kinds`). A symptom is reported as a consequence of a dependency only
where a physical path from the dependency's failure to that symptom exists, listed in CAUSES;
anything else a part shows is its own fault.

Most of the isolation happens earlier, by design of the self-tests: a lamp is judged at the measured
supply voltage, so a flat battery never makes a lamp fail, and an alternator giving all it has is
never blamed for a low bus. What is left for this module is the causal table and the lamps whose
controller is not answering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace

from carlightd.core.domain import Kind
from carlightd.core.kinds import KINDS, PartConfig
from carlightd.core.selftests import NO_ANSWER, SelfTestResult, Verdict


def _causes() -> dict[tuple[Kind, str], dict[Kind, frozenset[str]]]:
    """(dependency kind, its failure) -> {dependent kind: failures that it can cause there},
    gathered from what each kind says it can suffer from its dependencies (`caused_by`)."""
    causes: dict[tuple[Kind, str], dict[Kind, frozenset[str]]] = {}
    for spec in KINDS.values():
        for dependency, table in spec.caused_by.items():
            for failure, symptoms in table.items():
                causes.setdefault((dependency, failure), {})[spec.kind] = symptoms
    return causes


CAUSES = _causes()


# Not frozen: one is built for every part on every cycle, and a frozen dataclass costs four
# times as much to build. Nothing changes one once built.
@dataclass(slots=True)
class Finding:
    """A part's self-test result after isolation."""

    part_id: str
    kind: Kind
    result: SelfTestResult
    consequence_of: str | None = None


class Topology:
    """Who depends on whom, derived from the configured parts and what their kinds declare."""

    def __init__(self, components: Sequence[PartConfig]) -> None:
        self.kinds = {c.id: Kind(c.kind) for c in components}
        ids: dict[Kind, list[str]] = {kind: [] for kind in KINDS}
        for component in components:
            ids[Kind(component.kind)].append(component.id)
        # Parts measured through another (a lamp through its controller): unreachable when it is.
        self.controller_of: dict[str, str] = {}
        self.depends_on: dict[str, tuple[str, ...]] = {}
        for component in components:
            spec = KINDS[Kind(component.kind)]
            controller = spec.measured_by(component)
            if controller is not None:
                self.controller_of[component.id] = controller
            self.depends_on[component.id] = spec.depends_on(component, ids)
        # Parts that name their dependents (a fuse its lamps, a ground the lamps it serves).
        for component in components:
            for dependent in KINDS[Kind(component.kind)].dependents(component):
                if dependent in self.depends_on:
                    self.depends_on[dependent] += (component.id,)


def isolate(
    results: Mapping[str, SelfTestResult],
    topology: Topology,
    remembered: Mapping[str, Set[str]],
) -> dict[str, Finding]:
    """Attach `consequence_of` to symptoms of failed dependencies and explain unreachable parts.

    `remembered` holds each part's root-cause failures still in fault memory, so a battery drained
    by an alternator stays a consequence after the engine stops and the alternator can't be tested.
    """
    findings: dict[str, Finding] = {}

    def visit(part_id: str) -> Finding:
        if part_id in findings:
            return findings[part_id]
        kind = topology.kinds[part_id]
        result = results[part_id]
        controller = topology.controller_of.get(part_id)
        if result is NO_ANSWER and controller is not None and results[controller].failed:
            result = replace(result, reason=f"controller {controller} unreachable")
        finding = Finding(part_id, kind, result)
        if result.verdict is Verdict.FAILED:
            for dependency in topology.depends_on[part_id]:
                dependency_failures = set(remembered.get(dependency, ()))
                current = results[dependency]
                if current.failed and current.failure is not None:
                    dependency_failures.add(current.failure)
                dependency_kind = topology.kinds[dependency]
                if any(
                    result.failure in CAUSES.get((dependency_kind, failure), {}).get(kind, ())
                    for failure in dependency_failures
                ):
                    root = visit(dependency).consequence_of or dependency
                    finding = Finding(part_id, kind, result, consequence_of=root)
                    break
        findings[part_id] = finding
        return finding

    for part_id in results:
        visit(part_id)
    return findings
