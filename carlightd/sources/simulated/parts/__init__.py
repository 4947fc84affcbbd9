"""The simulated parts, one module per kind (beside the kind's module in `carlightd.core.kinds`,
which cannot hold them: the core never imports a source), gathered in `SIMULATED`, which the car
reads to build its parts. A kind without a simulated part stops the import, naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from carlightd.core.domain import Kind
from carlightd.core.kinds import KINDS, KindSpec
from carlightd.core.kinds.spec import KindRegistryError
from carlightd.sources.simulated.parts.alternator import Alternator
from carlightd.sources.simulated.parts.base import SimulatedPart
from carlightd.sources.simulated.parts.battery import Battery
from carlightd.sources.simulated.parts.controller import Controller
from carlightd.sources.simulated.parts.fuse import Fuse
from carlightd.sources.simulated.parts.ground import Ground
from carlightd.sources.simulated.parts.lamp import Lamp

Part = SimulatedPart[Any, Any]


def build_simulated(
    parts: Iterable[type[Part]], kinds: Mapping[Kind, KindSpec[Any, Any]] = KINDS
) -> dict[Kind, type[Part]]:
    """The simulated part of every registered kind, in the registry's order; KindRegistryError
    names every kind without one (or with two)."""
    registry: dict[Kind, type[Part]] = {}
    problems: list[str] = []
    for part in parts:
        if part.kind in registry:
            problems.append(
                f"{part.kind}: two simulated parts, {registry[part.kind].__name__} "
                f"and {part.__name__}"
            )
        registry[part.kind] = part
    missing = [str(kind) for kind in kinds if kind not in registry]
    if missing:
        problems.append(
            f"no simulated part for: {', '.join(missing)} (add "
            "carlightd/sources/simulated/parts/<kind>.py and its line in parts/__init__.py)"
        )
    unknown = [str(kind) for kind in registry if kind not in kinds]
    if unknown:
        problems.append(f"simulated parts of unregistered kinds: {', '.join(unknown)}")
    if problems:
        raise KindRegistryError("the simulated car's parts are wrong: " + "; ".join(problems))
    return {kind: registry[kind] for kind in kinds}


SIMULATED: dict[Kind, type[Part]] = build_simulated(
    [Lamp, Battery, Alternator, Controller, Fuse, Ground]
)

__all__ = ["SIMULATED", "Part", "SimulatedPart", "build_simulated"]
