"""The commands of the MQTT contract (DESIGN §5, `ROOT/request/{command}`), in one registry.

Each `Command` says everything about one command: its name on the wire, its request model (the
JSON Schema `docs/schemas/request-{name}.schema.json`), what it does to the car (`handler`, through
the `Workshop` seam), and how a person asks for it (the CLI's subcommand, the dashboard's control).
The daemon's parser, the schemas, the CLI and the dashboard all read `COMMANDS`: a new command is
a request model and one entry below.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from carlightd.core.domain import Ignition
from carlightd.core.ports import Workshop


class Request(BaseModel):
    """What every request body may carry; each command's model adds its own fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    transaction: str | int | None = Field(default=None, description="echoed in the response")


# An intermittent failure's presence: the fraction of cycles it is there, strictly between 0 (never:
# not a failure) and 1 (always: a standing one, which is what leaving it out asks for).
Presence = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class InjectFault(Request):
    component: str = Field(min_length=1, max_length=64)
    failure: str = Field(min_length=1, max_length=64)
    intermittent: Presence | None = Field(
        default=None,
        description="present in this fraction of cycles (0 < p < 1), drawn per cycle from a "
        "seeded stream; left out: present in every cycle",
    )


class Repair(Request):
    component: str = Field(min_length=1, max_length=64)


class ClearFaults(Request):
    pass


class SetIgnition(Request):
    state: Literal["off", "on", "run"]


# What an argument names, so that a form can offer the right values: a part of the car, one of
# that part's failures, or one of the field's fixed choices (a `Literal` in the request model).
Names = Literal["part", "failure", "choice"]


@dataclass(frozen=True)
class Argument:
    """One value a person gives: a positional argument of the CLI, an input of the dashboard."""

    metavar: str  # the CLI's name for it (`carlightd inject PART FAILURE`)
    field: str  # the request body's field it fills
    names: Names


@dataclass(frozen=True)
class Option:
    """One value a person may give or leave out: a `--flag VALUE` of the CLI, an input of the
    dashboard. `parse` turns the text typed into the field's value, or raises ValueError saying
    what is wrong (naming the field), so the CLI refuses it before sending."""

    flag: str  # the CLI's `--flag`
    field: str  # the request body's field it fills
    metavar: str
    help: str
    parse: Callable[[str], Any]


def _presence(text: str) -> float:
    """`--intermittent P` as typed, checked as the request model checks it (NaN and 1e999 too,
    which JSON cannot carry to the daemon to be refused there)."""
    try:
        return TypeAdapter(Presence).validate_python(float(text))
    except (ValueError, ValidationError):
        raise ValueError(
            f"intermittent: must be a number strictly between 0 and 1, not {text!r}"
        ) from None


@dataclass(frozen=True)
class Cli:
    subcommand: str
    help: str


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Command(Generic[R]):
    name: str  # on the wire: ROOT/request/{name}
    request: type[R]
    handler: Callable[[Workshop, R], Awaitable[dict[str, Any]]]  # returns the response's `data`
    description: str  # one line, for people (the dashboard shows it)
    label: str  # one word for the dashboard's button
    cli: Cli
    arguments: tuple[Argument, ...] = ()  # in the CLI's order
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        """A command whose arguments do not fit its request model fails here, at import."""
        fields = self.request.model_fields
        for option in self.options:
            if option.field not in fields or fields[option.field].is_required():
                raise TypeError(
                    f"command {self.name!r}: option {option.flag!r} fills {option.field!r}, "
                    f"which is not an optional field of {self.request.__name__}"
                )
        for argument in self.arguments:
            if argument.field not in fields:
                raise TypeError(
                    f"command {self.name!r}: argument {argument.metavar!r} fills "
                    f"{argument.field!r}, which {self.request.__name__} does not have"
                )
            if argument.names == "choice" and not self.choices(argument):
                raise TypeError(
                    f"command {self.name!r}: argument {argument.metavar!r} is a choice, but "
                    f"{self.request.__name__}.{argument.field} is not a Literal of strings"
                )
        names = [argument.names for argument in self.arguments]
        if "failure" in names and "part" not in names:
            raise TypeError(f"command {self.name!r}: a failure is named without its part")
        given = {argument.field for argument in self.arguments}
        if missing := [n for n, f in fields.items() if f.is_required() and n not in given]:
            raise TypeError(
                f"command {self.name!r}: no argument fills the required field(s) "
                f"{', '.join(missing)} of {self.request.__name__}"
            )

    def choices(self, argument: Argument) -> tuple[str, ...]:
        """The values a `choice` argument may take, read from the request model's `Literal`;
        empty for any other argument."""
        if argument.names != "choice":
            return ()
        annotation = self.request.model_fields[argument.field].annotation
        if typing.get_origin(annotation) is not Literal:
            return ()
        values = typing.get_args(annotation)
        return values if all(isinstance(v, str) for v in values) else ()


async def _inject(workshop: Workshop, request: InjectFault) -> dict[str, Any]:
    if request.intermittent is None:
        workshop.inject(request.component, request.failure)
        return {"component": request.component, "failure": request.failure}
    workshop.inject(request.component, request.failure, request.intermittent)
    return {
        "component": request.component,
        "failure": request.failure,
        "intermittent": request.intermittent,
    }


async def _repair(workshop: Workshop, request: Repair) -> dict[str, Any]:
    workshop.repair(request.component)
    return {"component": request.component}


async def _clear(workshop: Workshop, request: ClearFaults) -> dict[str, Any]:
    return {"cleared": await workshop.clear_faults()}


async def _set_ignition(workshop: Workshop, request: SetIgnition) -> dict[str, Any]:
    workshop.set_ignition(Ignition(request.state))
    return {"ignition": request.state}


PART = Argument("part", "component", "part")

COMMANDS: dict[str, Command[Any]] = {
    command.name: command
    for command in (
        Command(
            "inject_fault",
            InjectFault,
            _inject,
            description="Break a part (besides what is broken already): it fails as named until "
            "repaired, in every cycle or, intermittent, in a fraction p of them.",
            label="break",
            cli=Cli("inject", "break a part of the running daemon's car"),
            arguments=(PART, Argument("failure", "failure", "failure")),
            options=(
                Option(
                    "--intermittent",
                    "intermittent",
                    "P",
                    "present in a fraction P of cycles (0 < P < 1); default: in every cycle",
                    _presence,
                ),
            ),
        ),
        Command(
            "repair",
            Repair,
            _repair,
            description="Replace a part with a healthy one.",
            label="repair",
            cli=Cli("repair", "replace a part with a healthy one"),
            arguments=(PART,),
        ),
        Command(
            "clear_faults",
            ClearFaults,
            _clear,
            description="Clear the fault memory, as a scan tool does.",
            label="clear",
            cli=Cli("clear", "clear the fault memory, as a scan tool does"),
        ),
        Command(
            "set_ignition",
            SetIgnition,
            _set_ignition,
            description="Turn the key: off, on, or run (the engine runs).",
            label="turn",
            cli=Cli("ignition", "turn the key"),
            arguments=(Argument("state", "state", "choice"),),
        ),
    )
}
