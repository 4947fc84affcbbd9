"""JSON Schemas of the configuration and of every payload of the MQTT contract, from the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from carlightd.config import Settings
from carlightd.contract.commands import COMMANDS
from carlightd.contract.payloads import (
    ComponentPayload,
    DtcsPayload,
    ErrorResponse,
    EventPayload,
    FaultsPayload,
    OkResponse,
    StatusPayload,
    TelemetryPayload,
)

MODELS: dict[str, type[BaseModel]] = {
    "config": Settings,
    "faults": FaultsPayload,
    "dtcs": DtcsPayload,
    "component": ComponentPayload,
    "event": EventPayload,
    "telemetry": TelemetryPayload,
    "status": StatusPayload,
    "response-ok": OkResponse,
    "response-error": ErrorResponse,
    **{f"request-{name}": command.request for name, command in COMMANDS.items()},
}


def all_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in MODELS.items()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
