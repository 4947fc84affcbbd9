"""What every kind of part declares about itself (`KindSpec`), the configuration model every part's
settings derive from, and the checks that turn a forgotten or half-declared kind into an error at
import time instead of a silent default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from carlightd.core.domain import Kind, Reading
from carlightd.core.selftests import SelfTest
from carlightd.errors import CarlightdError

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$"),
]


# No docstring here or in a kind's model: pydantic would put it into the JSON Schema.
class PartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # each kind narrows it to its own tag, the discriminator of the configuration union
    id: Identifier


ConfigT = TypeVar("ConfigT", bound=PartConfig)
ReadingT = TypeVar("ReadingT", bound=Reading)

# Part ids of the car by kind, in configuration order (every registered kind has a list).
IdsByKind = Mapping[Kind, Sequence[str]]


def _answers_itself(config: Any) -> str | None:
    return None


def _depends_on_nothing(config: Any, ids: IdsByKind) -> tuple[str, ...]:
    return ()


def _answers_for_nobody(config: Any) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class KindSpec(Generic[ConfigT, ReadingT]):
    """One kind of part, as the core needs to know it. DTCs stay in `dtc_catalogue.toml`, under
    the kind's name; the simulated part lives in `carlightd.sources.simulated.parts`."""

    kind: Kind
    config_model: type[ConfigT]  # its `[[components]]` entry, tagged `kind = "<kind>"`
    reading_type: type[ReadingT]  # what its sensors report
    failures: tuple[str, ...]  # everything that can go wrong with it (DESIGN §2)
    self_test: Callable[[ConfigT], SelfTest]  # the assertion on its reading, for one part
    exactly_one: bool = False  # the car needs exactly one part of this kind
    # Configuration fields that name another part, and the kind that part must be.
    references: Mapping[str, Kind] = field(default_factory=dict)
    # The part whose silence leaves this one unread (a lamp's controller); None: it answers itself.
    measured_by: Callable[[ConfigT], str | None] = _answers_itself
    # The parts whose failures can show up as this part's symptoms …
    depends_on: Callable[[ConfigT, IdsByKind], tuple[str, ...]] = _depends_on_nothing
    # … and which: dependency kind -> its failure -> this part's failures it explains.
    caused_by: Mapping[Kind, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    # The parts that depend on this one without naming it (the lamps a fuse feeds): the reverse
    # of `depends_on`, for a part whose configuration lists its dependents.
    dependents: Callable[[ConfigT], tuple[str, ...]] = _answers_for_nobody


class KindRegistryError(CarlightdError):
    """A kind of part is missing from a registry, registered twice, or declared inconsistently."""


def _tag(model: type[PartConfig]) -> str | None:
    """The literal `kind` a configuration model accepts, or None if it is not a single literal."""
    tags = get_args(model.model_fields["kind"].annotation)
    return tags[0] if len(tags) == 1 and isinstance(tags[0], str) else None


def build_registry(
    specs: Iterable[KindSpec[Any, Any]], kinds: Iterable[StrEnum] = Kind
) -> dict[Kind, KindSpec[Any, Any]]:
    """The registry, in the order of `kinds`; KindRegistryError names every kind that has no spec,
    two specs, or a spec that contradicts itself or the others.

    Kinds are matched by value: an Enum hashes by member name, a string by its text."""
    by_value: dict[str, KindSpec[Any, Any]] = {}
    problems: list[str] = []
    for spec in specs:
        if str(spec.kind) in by_value:
            problems.append(f"kind {str(spec.kind)!r} is registered twice")
        by_value[str(spec.kind)] = spec
    wanted = [str(kind) for kind in kinds]
    missing = [kind for kind in wanted if kind not in by_value]
    if missing:
        problems.append(
            f"no kind module registered for: {', '.join(missing)} "
            "(add carlightd/core/kinds/<kind>.py and its line in carlightd/core/kinds/__init__.py)"
        )
    unknown = [kind for kind in by_value if kind not in wanted]
    if unknown:
        problems.append(f"registered kinds that are not Kind members: {', '.join(unknown)}")
    registry = {spec.kind: spec for value, spec in by_value.items() if value in wanted}
    for kind, spec in registry.items():
        problems += _inconsistencies(kind, spec, registry)
    if problems:
        raise KindRegistryError("the registry of part kinds is wrong: " + "; ".join(problems))
    return {by_value[value].kind: by_value[value] for value in wanted}


def _inconsistencies(
    kind: Kind, spec: KindSpec[Any, Any], registry: Mapping[Kind, KindSpec[Any, Any]]
) -> list[str]:
    problems = []
    if _tag(spec.config_model) != kind:
        problems.append(
            f"{kind}: {spec.config_model.__name__}.kind must be Literal[{str(kind)!r}], "
            "the tag of the configuration union"
        )
    if not issubclass(spec.reading_type, Reading):
        problems.append(f"{kind}: {spec.reading_type.__name__} is not a Reading")
    if not spec.failures or len(set(spec.failures)) != len(spec.failures):
        problems.append(f"{kind}: failures must be a non-empty tuple without repeats")
    for name, target in spec.references.items():
        if name not in spec.config_model.model_fields:
            problems.append(f"{kind}: references field {name!r}, which its model does not have")
        if target not in registry:
            problems.append(f"{kind}: field {name!r} references unregistered kind {target!r}")
    for dependency, table in spec.caused_by.items():
        theirs = registry[dependency].failures if dependency in registry else ()
        for failure, symptoms in table.items():
            if failure not in theirs:
                problems.append(f"{kind}: caused_by names {dependency}/{failure}, which is unknown")
            for symptom in sorted(symptoms - set(spec.failures)):
                problems.append(f"{kind}: caused_by explains {symptom!r}, not a {kind} failure")
    return problems
