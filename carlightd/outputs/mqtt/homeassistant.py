"""Home Assistant MQTT discovery: the vehicle as one device, its parts as problem sensors.

Device-based discovery (`{prefix}/device/{node}/config`, the entities under `components`, Home
Assistant 2024.11+) by default; per-entity discovery (`{prefix}/{platform}/{node}/{object}/config`)
for older installations. Every entity reads the daemon's own contract topics — nothing is
published for Home Assistant alone but the discovery messages — and all are tied to
`ROOT/availability`. Only the current mode's topics are published; a change of mode is migrated
the way Home Assistant documents (`transition`). Turning discovery off empties the discovery
topics, which is how Home Assistant is told to remove them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from carlightd import __version__
from carlightd.config import Settings
from carlightd.contract.payloads import Topics

ORIGIN = {"name": "carlightd", "sw_version": __version__}
# Sent on a discovery topic, it makes Home Assistant unload what it discovered there and keep
# its registry entries, for the same unique ids to take back under another topic.
MIGRATE = {"migrate_discovery": True}
Mode = Literal["device", "entity", "off"]
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
        # Attributes come from the fault list, which knows since when a part has failed and how
        # often that failure was confirmed since the memory was last cleared (v1.1).
        attributes = (
            "{% set f = value_json.faults | selectattr('component', 'eq', '" + part + "') | list %}"
            "{{ {'failure': f[0].failure if f else none, 'dtc': f[0].dtc if f else none,"
            " 'since': f[0].since if f else none, 'status': f[0].status if f else none,"
            " 'consequence_of': f[0].consequence_of if f else none,"
            " 'occurrences': f[0].occurrences if f else none} | tojson }}"
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


def announced_mode(settings: Settings) -> Mode:
    return settings.homeassistant.mode if settings.homeassistant.discovery else "off"


def platforms(settings: Settings) -> dict[str, str]:
    """Object id -> platform of every entity the configuration has."""
    return {k: v["platform"] for k, v in components(settings).items()}


def _device_payload(settings: Settings, gone: Mapping[str, str]) -> dict[str, Any]:
    return {
        "device": _device(settings),
        "origin": ORIGIN,
        **_availability(settings),
        "components": {**components(settings), **{k: {"platform": v} for k, v in gone.items()}},
        "qos": 1,
    }


def _entity_payloads(settings: Settings) -> dict[str, dict[str, Any]]:
    messages: dict[str, dict[str, Any]] = {}
    for object_id, entity in components(settings).items():
        payload = {k: v for k, v in entity.items() if k != "platform"}
        messages[entity_topic(settings, entity["platform"], object_id)] = {
            **payload,
            "device": _device(settings),
            "origin": ORIGIN,
            **_availability(settings),
            "qos": 1,
        }
    return messages


def discovery_messages(
    settings: Settings, retired: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any] | None]:
    """topic -> payload (None: an empty retained message, removing what was there).

    Discovery on: the current mode's topics only. Publishing anything on the other mode's
    topics would reach the entities Home Assistant has from this mode (the same discovery ids)
    and be refused with a "conflicting MQTT discovery message" warning each.

    `retired` (object id -> platform) are entities announced before that the configuration no
    longer has (parts removed): Home Assistant removes one component of a device when it comes
    with nothing but its platform, and a per-entity one with an empty message.

    Discovery off: every topic of both modes empty (removal, whichever mode was used).
    """
    current = platforms(settings)
    gone = {k: v for k, v in (retired or {}).items() if k not in current}
    mode = announced_mode(settings)
    if mode == "device":
        return {device_topic(settings): _device_payload(settings, gone)}
    messages: dict[str, dict[str, Any] | None] = {}
    if mode == "off":
        messages[device_topic(settings)] = None
        for object_id, platform in {**gone, **current}.items():
            messages[entity_topic(settings, platform, object_id)] = None
        return messages
    for object_id, platform in gone.items():
        messages[entity_topic(settings, platform, object_id)] = None
    messages.update(_entity_payloads(settings))
    return messages


def transition(
    settings: Settings, last_mode: Mode | None, last_entities: Mapping[str, str]
) -> list[tuple[str, dict[str, Any] | None]]:
    """The messages, in order, that take Home Assistant from the discovery announced last
    (`last_mode` None: unknown) to the one `settings` ask for.

    A switch between modes follows Home Assistant's documented migration ("Migration from
    single component to device-based discovery", and its rollback): `{"migrate_discovery":
    true}` on every old topic (Home Assistant unloads the entity and keeps its registry entry:
    entity id, name, area, history), then the new discovery (the same unique ids take those
    entries back), then an empty message on every old topic. Home Assistant 2025.4 logs that
    last clean-up as one "conflicting MQTT discovery message" warning per entity, once: the old
    topics must be emptied, or they would be replayed at every Home Assistant start.
    """
    current = platforms(settings)
    mode = announced_mode(settings)
    retired = {k: v for k, v in last_entities.items() if k not in current}
    if last_mode == "off" and mode == "off":
        return []
    if last_mode == mode:
        return list(discovery_messages(settings, retired).items())
    if last_mode is None or last_mode == "off":  # nothing known to clean up
        return list(discovery_messages(settings).items())
    if mode == "off":  # removal, the way it was announced
        if last_mode == "device":
            return [(device_topic(settings), None)]
        return [(entity_topic(settings, p, k), None) for k, p in last_entities.items()]
    if last_mode == "entity":  # -> device
        kept = [entity_topic(settings, p, k) for k, p in last_entities.items() if k in current]
        return [
            *[(entity_topic(settings, p, k), None) for k, p in retired.items()],
            *[(topic, MIGRATE) for topic in kept],
            (device_topic(settings), _device_payload(settings, {})),
            *[(topic, None) for topic in kept],
        ]
    # device -> entity: parts removed meanwhile go first, the way a device removes them.
    steps: list[tuple[str, dict[str, Any] | None]] = []
    if retired:
        steps.append((device_topic(settings), _device_payload(settings, retired)))
    return [
        *steps,
        (device_topic(settings), MIGRATE),
        *_entity_payloads(settings).items(),
        (device_topic(settings), None),
    ]


def status_topic(settings: Settings) -> str:
    """Home Assistant announces itself here (`online`) when it starts."""
    return f"{settings.homeassistant.prefix}/status"
