"""The kinds of part, one module each, gathered here: everything that enumerates kinds (the
configuration union, the failure catalogue, the self-tests, the topology, the JSON Schemas, the
simulated car) reads `KINDS`.

A new kind is one new module beside these and one line below; a `Kind` member without a module
(or a module without a member) stops the import with a `KindRegistryError` naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from carlightd.core.domain import Kind, UnknownFailureError
from carlightd.core.kinds import alternator, battery, controller, fuse, ground, lamp
from carlightd.core.kinds.spec import KindSpec, PartConfig, build_registry
from carlightd.core.selftests import SelfTest

KINDS: dict[Kind, KindSpec[Any, Any]] = build_registry(
    [
        lamp.KIND,
        battery.KIND,
        alternator.KIND,
        controller.KIND,
        fuse.KIND,
        ground.KIND,
    ]
)

# The failure catalogue (DESIGN §2): what can go wrong with each kind of part.
FAILURES: dict[Kind, tuple[str, ...]] = {kind: spec.failures for kind, spec in KINDS.items()}


def check_failure(kind: Kind, failure: str) -> None:
    if failure not in FAILURES[kind]:
        raise UnknownFailureError(kind, failure, FAILURES[kind])


def self_test_for(config: PartConfig) -> SelfTest:
    """The self-test of one configured part, chosen by its kind."""
    spec = KINDS[Kind(config.kind)]
    if not isinstance(config, spec.config_model):
        raise TypeError(
            f"{config.id}: a {config.kind} is configured by {spec.config_model.__name__}, "
            f"not {type(config).__name__}"
        )
    return spec.self_test(config)


def check_car(components: Sequence[PartConfig]) -> None:
    """ValueError naming the first thing that makes these parts no car: repeated ids, a kind the
    car needs exactly one of, a reference to a part that is not there or of the wrong kind."""
    ids = Counter(component.id for component in components)
    repeated = sorted(name for name, count in ids.items() if count > 1)
    if repeated:
        raise ValueError(f"component ids must be unique; repeated: {', '.join(repeated)}")
    for kind, spec in KINDS.items():
        if spec.exactly_one:
            count = sum(1 for component in components if component.kind == kind)
            if count != 1:
                raise ValueError(f"the car needs exactly one {kind} component, found {count}")
    kinds = {component.id: component.kind for component in components}
    for component in components:
        for name, target in KINDS[Kind(component.kind)].references.items():
            value = getattr(component, name)
            # A field names one part, or a list of them (the lamps a fuse feeds).
            for named in value if isinstance(value, list | tuple) else (value,):
                if kinds.get(named) != target:
                    raise ValueError(
                        f"{component.kind} {component.id!r} names {name} {named!r}, "
                        f"which is not a {target} component"
                    )


__all__ = [
    "FAILURES",
    "KINDS",
    "KindSpec",
    "PartConfig",
    "check_car",
    "check_failure",
    "self_test_for",
]
