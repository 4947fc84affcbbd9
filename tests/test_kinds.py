"""One module per kind of part, gathered by a registry: everything that enumerates kinds reads it,
and a forgotten or half-declared kind fails loudly — at import, or here — never silently."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from carlightd import config
from carlightd.core import dtc
from carlightd.core.domain import Ignition, Kind, UnknownFailureError
from carlightd.core.isolation import CAUSES, Topology
from carlightd.core.kinds import FAILURES, KINDS, check_failure, self_test_for
from carlightd.core.kinds.battery import BatteryConfig
from carlightd.core.kinds.controller import ControllerConfig
from carlightd.core.kinds.lamp import LampReading
from carlightd.core.kinds.spec import KindRegistryError, KindSpec, build_registry
from carlightd.errors import CarlightdError
from carlightd.sources.simulated.car import Car
from carlightd.sources.simulated.parts import SIMULATED, build_simulated
from tests.simulate import settings

ROOT = Path(__file__).parents[1]


def python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter (imports happen once per process), from the repository."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# A kind a newcomer added to `Kind` and forgot to give a module (named so that no real kind ever
# takes its name and turns these tests around).
FORGOTTEN = "forgotten_kind"
WITH_A_FORGOTTEN_KIND = f"""
    import enum
    import carlightd.core.domain as domain
    members = {{member.name: member.value for member in domain.Kind}}
    domain.Kind = enum.StrEnum("Kind", {{**members, "FORGOTTEN": "{FORGOTTEN}"}})
"""


def test_every_kind_has_exactly_one_module_in_the_registry_in_kind_order() -> None:
    assert list(KINDS) == list(Kind)
    for kind, spec in KINDS.items():
        assert spec.kind is kind
        assert FAILURES[kind] == spec.failures
        assert spec.config_model.model_fields["kind"].annotation.__args__ == (str(kind),)
        assert spec.config_model.__module__ == f"carlightd.core.kinds.{kind}"


def test_a_kind_without_a_module_stops_the_import() -> None:
    done = python(WITH_A_FORGOTTEN_KIND + "    import carlightd.core.kinds\n")
    assert done.returncode == 1
    assert "KindRegistryError" in done.stderr
    assert f"no kind module registered for: {FORGOTTEN} " in done.stderr


def test_the_import_check_lets_the_real_kinds_through() -> None:
    """The same subprocess without that member imports cleanly: the failure above is its own."""
    unchanged = WITH_A_FORGOTTEN_KIND.replace(f', "FORGOTTEN": "{FORGOTTEN}"', "")
    assert FORGOTTEN not in unchanged
    done = python(unchanged + "    import carlightd.core.kinds\n")
    assert done.returncode == 0, done.stderr


def test_the_registry_names_every_problem() -> None:
    specs = list(KINDS.values())
    without_controller = [spec for spec in specs if spec.kind is not Kind.CONTROLLER]
    with pytest.raises(KindRegistryError, match="no kind module registered for: controller "):
        build_registry(without_controller)
    with pytest.raises(KindRegistryError, match="'lamp' is registered twice"):
        build_registry([*specs, specs[0]])
    assert issubclass(KindRegistryError, CarlightdError)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"config_model": BatteryConfig},
            r"LampConfig|BatteryConfig\.kind must be Literal\['lamp'\]",
        ),
        ({"failures": ()}, "failures must be a non-empty tuple"),
        ({"failures": ("degraded", "degraded")}, "failures must be a non-empty tuple"),
        ({"references": {"fuse_box": Kind.CONTROLLER}}, "references field 'fuse_box'"),
        (
            {"caused_by": {Kind.ALTERNATOR: {"melted": frozenset({"degraded"})}}},
            "caused_by names alternator/melted",
        ),
        (
            {"caused_by": {Kind.BATTERY: {"weak": frozenset({"flat"})}}},
            "caused_by explains 'flat', not a lamp failure",
        ),
    ],
)
def test_a_kind_that_contradicts_itself_is_refused(change: dict[str, Any], problem: str) -> None:
    lamp = KINDS[Kind.LAMP]
    broken = KindSpec(**{**{f: getattr(lamp, f) for f in lamp.__dataclass_fields__}, **change})
    with pytest.raises(KindRegistryError, match=problem):
        build_registry([broken if spec.kind is Kind.LAMP else spec for spec in KINDS.values()])


def test_every_kind_has_a_simulated_part() -> None:
    assert list(SIMULATED) == list(Kind)
    for kind, part in SIMULATED.items():
        assert part.kind is kind
        assert part.__module__ == f"carlightd.sources.simulated.parts.{kind}"
    without_controller = [part for part in SIMULATED.values() if part.kind is not Kind.CONTROLLER]
    with pytest.raises(KindRegistryError, match="no simulated part for: controller "):
        build_simulated(without_controller)


def test_a_kind_without_a_simulated_part_stops_the_import() -> None:
    done = python(
        """
        from carlightd.core import kinds
        kinds.KINDS["forgotten_kind"] = kinds.KINDS[kinds.Kind.CONTROLLER]  # in the core …
        import carlightd.sources.simulated.parts  # … but not simulated
        """
    )
    assert done.returncode == 1
    assert "KindRegistryError" in done.stderr
    assert "no simulated part for: forgotten_kind " in done.stderr


def test_every_failure_of_every_kind_has_a_dtc() -> None:
    table = dtc.catalogue()
    for kind, spec in KINDS.items():
        for failure in spec.failures:
            entry = table[(kind, failure)]
            assert entry.kind is kind
            assert entry.failure == failure
    assert len(table) == sum(len(spec.failures) for spec in KINDS.values())


def test_a_failure_without_a_dtc_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAILURES, Kind.LAMP, (*FAILURES[Kind.LAMP], "melted"))
    dtc.catalogue.cache_clear()
    try:
        with pytest.raises(dtc.CatalogueError, match="no DTC for: lamp/melted"):
            dtc.catalogue()
    finally:
        dtc.catalogue.cache_clear()


def test_each_part_gets_its_own_kinds_self_test() -> None:
    for component in settings().components:
        test = self_test_for(component)
        assert test.kind == component.kind
        assert type(test).__module__ == f"carlightd.core.kinds.{component.kind}"


def test_a_configuration_of_the_wrong_model_is_refused_not_given_another_test() -> None:
    """What `case _:` used to do silently: a part that is not what its kind says gets no test."""
    impostor = BatteryConfig.model_construct(kind="lamp", id="impostor")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a lamp is configured by LampConfig, not BatteryConfig"):
        self_test_for(impostor)
    unknown = ControllerConfig.model_construct(kind=FORGOTTEN, id="f1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"'{FORGOTTEN}' is not a valid Kind"):
        self_test_for(unknown)


def test_check_failure_names_the_kinds_failures() -> None:
    check_failure(Kind.LAMP, "degraded")
    with pytest.raises(
        UnknownFailureError, match="a lamp cannot have failure 'dead_cell'; expected"
    ):
        check_failure(Kind.LAMP, "dead_cell")


def test_the_configuration_union_is_built_from_the_registry() -> None:
    schema = config.Settings.model_json_schema()
    union = schema["properties"]["components"]["items"]
    assert set(union["discriminator"]["mapping"]) == {str(kind) for kind in KINDS}
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in union["oneOf"]] == [
        spec.config_model.__name__ for spec in KINDS.values()
    ]
    for kind in KINDS:
        with pytest.raises(ValidationError) as caught:
            config.Settings(components=[{"kind": str(kind), "id": "x", "surplus": 1}])
        # The union's tag is dropped from the error path, for every registered kind.
        assert ("components.0.surplus", "unknown key") in config.describe(caught.value)


def test_the_causal_links_are_each_kinds_own() -> None:
    flat = {Kind.BATTERY: frozenset({"discharged"})}
    expected = {(Kind.ALTERNATOR, failure): flat for failure in ("no_output", "undercharging")}
    expected[(Kind.ALTERNATOR, "diode_failure")] = flat
    expected[(Kind.FUSE, "blown")] = {Kind.LAMP: frozenset({"open_circuit"})}
    expected[(Kind.GROUND, "high_resistance")] = {Kind.LAMP: frozenset({"degraded"})}
    assert expected == CAUSES
    topology = Topology(settings().components)
    assert topology.depends_on["battery"] == ("alternator",)
    # A fuse and a ground name their lamps; the lamps depend on them all the same.
    assert topology.depends_on["brake_left"] == (
        "bcm",
        "battery",
        "alternator",
        "fuse_rear",
        "ground_rear",
    )
    assert topology.depends_on["fuse_rear"] == ()
    assert topology.controller_of["brake_left"] == "bcm"
    assert "bcm" not in topology.controller_of
    assert topology.depends_on["bcm"] == ()


def test_a_lamp_naming_a_part_that_is_no_controller_is_refused() -> None:
    components = [c.model_dump() for c in settings().components]
    lamp = [c for c in components if c["kind"] == "lamp"][-1]
    lamp["controller"] = "battery"  # a part, but not a controller
    with pytest.raises(ValidationError) as caught:
        config.Settings(components=components)
    [(path, message)] = config.describe(caught.value)
    assert path == "(top level)"  # the whole car is incoherent, not one entry
    assert message == (
        f"lamp {lamp['id']!r} names controller 'battery', which is not a controller component"
    )


def test_the_car_is_built_from_the_simulated_registry() -> None:
    car = Car(settings().components, seed=1, noise=0.0, ignition=Ignition.RUN)
    for part_id, kind in car.kinds.items():
        assert type(car.parts[part_id]) is SIMULATED[kind]
    assert isinstance(car.measure("brake_left"), LampReading)


def test_the_core_and_its_kinds_import_no_loader_and_no_source() -> None:
    done = python(
        """
        import sys
        import carlightd.core.diagnoser, carlightd.core.kinds, carlightd.core.isolation
        loaded = [m for m in sys.modules if m.startswith(("carlightd.config", "carlightd.sources",
                  "carlightd.outputs", "carlightd.app", "carlightd.store", "carlightd.contract",
                  "carlightd.consumers", "carlightd.tools", "pydantic_settings", "asyncio"))]
        print(loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
