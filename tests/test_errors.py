"""One error root: every exception class carlightd defines derives from `CarlightdError`, so a
caller can tell an error carlightd raised on purpose from a bug, and keeps its older bases."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import carlightd
from carlightd.errors import CarlightdError, UnknownPartError


def _modules() -> list[str]:
    names = [carlightd.__name__]
    for info in pkgutil.walk_packages(carlightd.__path__, prefix=f"{carlightd.__name__}."):
        if info.name.endswith("__main__"):
            continue  # running it would start the CLI
        names.append(info.name)
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined (not merely imported) in a carlightd module."""
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_the_walk_finds_the_errors_it_must() -> None:
    """The walk itself can fail: it sees the errors of every layer, not an empty list."""
    found = _defined_exceptions()
    for expected in (
        "carlightd.config.ConfigError",
        "carlightd.app.health.Unhealthy",
        "carlightd.consumers.client.ClientError",
        "carlightd.consumers.received.Malformed",
        "carlightd.outputs.mqtt.commands.CommandError",
        "carlightd.store.state.StateRejectedError",
        "carlightd.store.statelock.StateDirectoryInUseError",
        "carlightd.tools.embedded_broker.EmbeddedBrokerUnavailableError",
        "carlightd.core.domain.UnknownFailureError",
        "carlightd.core.dtc.CatalogueError",
        "carlightd.sources.simulated.car.NoResponseError",
        "carlightd.errors.UnknownPartError",
    ):
        assert expected in found, f"{expected} not found by the module walk"


def test_every_exception_carlightd_defines_is_a_carlightd_error() -> None:
    outside = sorted(
        name
        for name, cls in _defined_exceptions().items()
        if cls is not CarlightdError and not issubclass(cls, CarlightdError)
    )
    assert outside == [], f"not under CarlightdError: {', '.join(outside)}"


@pytest.mark.parametrize(
    ("name", "older_base"),
    [
        ("carlightd.consumers.received.Malformed", ValueError),
        ("carlightd.core.domain.UnknownFailureError", ValueError),
        ("carlightd.core.dtc.CatalogueError", ValueError),
        ("carlightd.tools.embedded_broker.EmbeddedBrokerUnavailableError", RuntimeError),
        ("carlightd.errors.UnknownPartError", KeyError),
    ],
)
def test_older_bases_are_kept(name: str, older_base: type[BaseException]) -> None:
    """Callers that catch ValueError, KeyError or RuntimeError are not broken."""
    assert issubclass(_defined_exceptions()[name], older_base)


def test_an_error_is_caught_by_its_root() -> None:
    with pytest.raises(CarlightdError, match="no component 'fog'"):
        raise UnknownPartError("fog", ["tail_left"])
