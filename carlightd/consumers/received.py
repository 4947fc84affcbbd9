"""What a consumer (the dashboard, the terminal views) does with a message it receives over MQTT.

Anyone who may publish under `ROOT/` can put anything there, retained. So every payload is
validated against the contract's models before it is shown; one that fails is refused with a
one-line reason (which never quotes the payload at length), and a topic this consumer does not
follow (`ROOT/status`, requests, responses, whatever comes next) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from carlightd.contract.payloads import (
    ComponentPayload,
    DtcsPayload,
    EventPayload,
    FaultsPayload,
    TelemetryPayload,
)
from carlightd.errors import CarlightdError

# Far above any real payload (a fault list of every part with freeze frames is a few KB); larger
# ones are refused before parsing, so a retained blob cannot make every viewer chew on it.
MAX_PAYLOAD_BYTES = 256 * 1024
AVAILABILITY = ("online", "offline")

MODELS: dict[str, type[BaseModel]] = {
    "faults": FaultsPayload,
    "dtcs": DtcsPayload,
    "events": EventPayload,
    "telemetry": TelemetryPayload,
}


class Malformed(CarlightdError, ValueError):
    """A payload on a followed topic that the contract does not allow; `str()` says why."""


@dataclass(frozen=True)
class Received:
    """A validated message: `topic` relative to ROOT, `value` the model (or the availability)."""

    topic: str
    value: BaseModel | str

    @property
    def component(self) -> str | None:
        return self.topic.split("/", 1)[1] if self.topic.startswith("components/") else None


def relative(root: str, topic: str) -> str | None:
    """The topic below `ROOT/`, or None for a topic elsewhere."""
    prefix = f"{root}/"
    return topic[len(prefix) :] if topic.startswith(prefix) else None


def followed(topic: str) -> bool:
    """Is this topic (relative to ROOT) one the views show? Everything else is ignored."""
    if topic in ("availability", *MODELS):
        return True
    kind, _, component = topic.partition("/")
    return kind == "components" and bool(component) and "/" not in component


def parse(topic: str, payload: bytes) -> Received | None:
    """Validate a message on `topic` (relative to ROOT): None if the topic is not followed,
    `Malformed` (with the reason) if the payload breaks the contract."""
    if not followed(topic):
        return None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Malformed(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    if topic == "availability":
        if payload.decode(errors="replace") not in AVAILABILITY:
            raise Malformed(f"availability must be 'online' or 'offline', got {_glimpse(payload)}")
        return Received(topic, payload.decode())
    model = MODELS.get(topic, ComponentPayload)
    try:
        value = model.model_validate_json(payload)
    except ValidationError as error:
        raise Malformed(describe(error)) from None
    received = Received(topic, value)
    if isinstance(value, ComponentPayload) and value.component != received.component:
        raise Malformed(
            f"component: {_glimpse(value.component.encode())} published on the topic "
            f"of {_glimpse((received.component or '').encode())}"
        )
    return received


def describe(error: ValidationError) -> str:
    """The first problem of a validation error as `field: message`, and how many more there are."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{_shorten(where)}: {first['msg']}{more}"


def _glimpse(payload: bytes, limit: int = 40) -> str:
    text = payload[: limit * 4].decode(errors="replace")
    return repr(text[:limit] + ("…" if len(text) > limit or len(payload) > limit * 4 else ""))


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
