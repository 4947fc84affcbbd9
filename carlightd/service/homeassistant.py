"""Home Assistant MQTT discovery: the vehicle as one device, its parts as problem sensors.

Device-based discovery (`{prefix}/device/{node}/config` with `cmps`, Home Assistant 2024.11+) by
default; per-entity discovery (`{prefix}/{platform}/{node}/{object}/config`) for older
installations. Every entity reads the daemon's own contract topics — nothing is published for
Home Assistant alone but the discovery messages — and all are tied to `ROOT/availability`.
Turning discovery off publishes empty retained messages on every discovery topic, which is how
Home Assistant is told to remove them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carlightd import __version__
from carlightd.config import Settings
from carlightd.service.payloads import Topics

ORIGIN = {"name": "carlightd", "sw_version": __version__}
WARNING_LAMP_NAMES = {
    "bulb": "Bulb failure warning",
    "battery": "Charging system warning",
    "check_engine": "Check engine warning",
}


def node_id(vehicle: str) -> str:
    return f"carlightd_{vehicle.replace('-', '_')}"


def _title(part_id: str) -> str:
    return part_id.replace("_", " ").capitalize()


def components(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every entity, keyed by object id, in Home Assistant's discovery vocabulary."""
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    node = node_id(settings.vehicle.id)
    entities: dict[str, dict[str, Any]] = {}

    for component in settings.components:
        part = component.id
        # Attributes come from the fault list, which knows since when a part has failed.
        attributes = (
            "{% set f = value_json.faults | selectattr('component', 'eq', '" + part + "') | list %}"
            "{{ {'failure': f[0].failure if f else none, 'dtc': f[0].dtc if f else none,"
            " 'since': f[0].since if f else none, 'status': f[0].status if f else none,"
            " 'consequence_of': f[0].consequence_of if f else none} | tojson }}"
        )
        entities[f"{part}_problem"] = {
            "platform": "binary_sensor",
            "unique_id": f"{node}_{part}_problem",
            "name": _title(part),
            "device_class": "problem",
            "state_topic": topics.component(part),
            "value_template": (
                "{{ 'ON' if value_json.status in ('pending', 'failed') else 'OFF' }}"
            ),
            "json_attributes_topic": topics.faults,
            "json_attributes_template": attributes,
        }
    for lamp, name in WARNING_LAMP_NAMES.items():
        entities[f"warning_{lamp}"] = {
            "platform": "binary_sensor",
            "unique_id": f"{node}_warning_{lamp}",
            "name": name,
            "device_class": "problem",
            "state_topic": topics.faults,
            "value_template": "{{ 'ON' if value_json.warning_lamps." + lamp + " else 'OFF' }}",
        }
    sensors = (
        ("bus_voltage", "Bus voltage", "voltage", "V", "{{ value_json.bus_v }}"),
        (
            "battery_soc",
            "Battery state of charge",
            "battery",
            "%",
            "{{ value_json.battery_soc_percent }}",
        ),
        (
            "alternator_current",
            "Alternator current",
            "current",
            "A",
            "{{ value_json.alternator.output_a if value_json.alternator else none }}",
        ),
    )
    for object_id, name, device_class, unit, template in sensors:
        entities[object_id] = {
            "platform": "sensor",
            "unique_id": f"{node}_{object_id}",
            "name": name,
            "device_class": device_class,
            "unit_of_measurement": unit,
            "state_class": "measurement",
            "state_topic": topics.telemetry,
            "value_template": template,
        }
    entities["clear_faults"] = {
        "platform": "button",
        "unique_id": f"{node}_clear_faults",
        "name": "Clear fault memory",
        "command_topic": topics.request("clear_faults"),
        "payload_press": "{}",
        "entity_category": "config",
    }
    return entities


def _device(settings: Settings) -> dict[str, Any]:
    return {
        "identifiers": [node_id(settings.vehicle.id)],
        "name": f"carlightd {settings.vehicle.id}",
        "manufacturer": "carlightd",
        "model": "Simulated 12 V electrical system",
        "sw_version": __version__,
    }


def _availability(settings: Settings) -> dict[str, Any]:
    topics = Topics(settings.mqtt.base_topic, settings.vehicle.id)
    return {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def device_topic(settings: Settings) -> str:
    return f"{settings.homeassistant.prefix}/device/{node_id(settings.vehicle.id)}/config"


def entity_topic(settings: Settings, platform: str, object_id: str) -> str:
    node = node_id(settings.vehicle.id)
    return f"{settings.homeassistant.prefix}/{platform}/{node}/{object_id}/config"


def discovery_messages(
    settings: Settings, retired: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any] | None]:
    """topic -> payload (None: an empty retained message, removing what was there).

    `retired` (object id -> platform) are entities announced before that the configuration no
    longer has (parts removed on a reload): Home Assistant removes one component of a device when
    it comes with nothing but its platform, and a per-entity one with an empty message.
    """
    entities = components(settings)
    enabled = settings.homeassistant.discovery
    mode = settings.homeassistant.mode
    messages: dict[str, dict[str, Any] | None] = {}
    gone = {k: v for k, v in (retired or {}).items() if k not in entities}
    device_payload = {
        "device": _device(settings),
        "origin": ORIGIN,
        **_availability(settings),
        "components": {**entities, **{k: {"platform": v} for k, v in gone.items()}},
        "qos": 1,
    }
    messages[device_topic(settings)] = device_payload if enabled and mode == "device" else None
    for object_id, platform in gone.items():
        messages[entity_topic(settings, platform, object_id)] = None
    for object_id, entity in entities.items():
        topic = entity_topic(settings, entity["platform"], object_id)
        if enabled and mode == "entity":
            payload = {k: v for k, v in entity.items() if k != "platform"}
            messages[topic] = {
                **payload,
                "device": _device(settings),
                "origin": ORIGIN,
                **_availability(settings),
                "qos": 1,
            }
        else:
            messages[topic] = None  # removed (or never there; an empty retained is harmless)
    return messages


def status_topic(settings: Settings) -> str:
    """Home Assistant announces itself here (`online`) when it starts."""
    return f"{settings.homeassistant.prefix}/status"
