"""Home Assistant discovery: payloads checked against Home Assistant's documented discovery keys
(homeassistant/components/mqtt: schemas.py DEVICE_DISCOVERY_SCHEMA, the binary_sensor, sensor and
button PLATFORM_SCHEMAs and MQTT_ENTITY_COMMON_SCHEMA), templates rendered with Jinja2 against
real payloads, and the discovery life cycle against a real broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jinja2
import pytest

from carlightd.service import homeassistant
from carlightd.service.daemon import Service
from carlightd.service.payloads import ComponentPayload, FaultsPayload, TelemetryPayload
from tests.brokers import subscribed
from tests.conftest import running, service_settings
from tests.simulate import Bench, settings

# Keys Home Assistant accepts, as its schemas define them.
DEVICE_DISCOVERY_KEYS = {
    "device",
    "components",
    "origin",
    "state_topic",
    "command_topic",
    "qos",
    "encoding",
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
}
DEVICE_INFO_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
ENTITY_COMMON_KEYS = {
    "platform",
    "name",
    "unique_id",
    "object_id",
    "default_entity_id",
    "device",
    "icon",
    "entity_category",
    "entity_picture",
    "enabled_by_default",
    "json_attributes_topic",
    "json_attributes_template",
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "origin",
    "qos",
    "encoding",
}
PLATFORM_KEYS = {
    "binary_sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_on",
        "payload_off",
    },
    "sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "state_class",
        "unit_of_measurement",
        "suggested_display_precision",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
    },
    "button": {"command_topic", "command_template", "payload_press", "device_class", "retain"},
}
# Device classes and their units, as Home Assistant documents them.
SENSOR_UNITS = {"voltage": {"V", "mV"}, "current": {"A", "mA"}, "battery": {"%"}}
BINARY_SENSOR_CLASSES = {"problem"}


def _device_payload() -> dict[str, Any]:
    messages = homeassistant.discovery_messages(settings())
    payload = messages[homeassistant.device_topic(settings())]
    assert payload is not None
    return payload


def test_device_discovery_uses_only_documented_keys() -> None:
    payload = _device_payload()
    assert set(payload) <= DEVICE_DISCOVERY_KEYS
    assert {"device", "components", "origin"} <= set(payload)  # required
    assert set(payload["device"]) <= DEVICE_INFO_KEYS
    assert payload["device"]["identifiers"]
    assert set(payload["origin"]) <= ORIGIN_KEYS
    assert "name" in payload["origin"]
    assert payload["availability_topic"] == "carlightd/demo-car/availability"
    for object_id, entity in payload["components"].items():
        platform = entity["platform"]
        allowed = ENTITY_COMMON_KEYS | PLATFORM_KEYS[platform]
        assert set(entity) <= allowed, (object_id, set(entity) - allowed)
        assert entity["unique_id"].startswith("carlightd_demo_car_")
        if platform == "binary_sensor":
            assert entity["device_class"] in BINARY_SENSOR_CLASSES
        if platform == "sensor":
            assert entity["unit_of_measurement"] in SENSOR_UNITS[entity["device_class"]]
            assert entity["state_class"] == "measurement"


def test_one_problem_sensor_per_part_three_lamps_three_sensors_one_button() -> None:
    entities = _device_payload()["components"]
    parts = [c.id for c in settings().components]
    assert all(entities[f"{part}_problem"]["device_class"] == "problem" for part in parts)
    platforms = [e["platform"] for e in entities.values()]
    assert platforms.count("binary_sensor") == len(parts) + 3
    assert platforms.count("sensor") == 3
    assert platforms.count("button") == 1
    assert entities["clear_faults"]["command_topic"] == "carlightd/demo-car/request/clear_faults"


def test_entity_mode_has_one_message_per_entity_and_removes_the_device() -> None:
    config = settings(homeassistant__mode="entity")
    messages = homeassistant.discovery_messages(config)
    assert messages[homeassistant.device_topic(config)] is None  # removed
    per_entity = {t: p for t, p in messages.items() if p is not None}
    assert len(per_entity) == len(config.components) + 3 + 3 + 1
    topic = "homeassistant/binary_sensor/carlightd_demo_car/brake_left_problem/config"
    payload = per_entity[topic]
    assert payload is not None
    assert "platform" not in payload  # the platform is in the topic
    assert set(payload) <= ENTITY_COMMON_KEYS | PLATFORM_KEYS["binary_sensor"]
    assert payload["device"]["identifiers"] == ["carlightd_demo_car"]


def test_discovery_off_empties_every_topic() -> None:
    messages = homeassistant.discovery_messages(settings(homeassistant__discovery=False))
    assert messages
    assert all(payload is None for payload in messages.values())


def test_a_retired_part_is_removed_the_documented_way() -> None:
    # Home Assistant: "An empty config can be published as an update to remove a single component
    # from the device discovery. Note that adding the platform option is still required."
    retired = {"fog_rear_problem": "binary_sensor"}
    device = homeassistant.discovery_messages(settings(), retired)
    payload = device[homeassistant.device_topic(settings())]
    assert payload is not None
    assert payload["components"]["fog_rear_problem"] == {"platform": "binary_sensor"}
    assert payload["components"]["brake_left_problem"]["device_class"] == "problem"
    # Per-entity discovery removes it with an empty retained message on its own topic.
    entity = homeassistant.discovery_messages(settings(homeassistant__mode="entity"), retired)
    assert entity["homeassistant/binary_sensor/carlightd_demo_car/fog_rear_problem/config"] is None
    # A "retired" entity that the configuration still has is not removed.
    kept = homeassistant.discovery_messages(settings(), {"brake_left_problem": "binary_sensor"})
    kept_payload = kept[homeassistant.device_topic(settings())]
    assert kept_payload is not None
    assert kept_payload["components"]["brake_left_problem"]["device_class"] == "problem"


def render(template: str, payload: dict[str, Any]) -> str:
    # Home Assistant's templates are Jinja2 with value_json bound to the parsed payload.
    return jinja2.Environment(autoescape=False).from_string(template).render(value_json=payload)


def test_templates_render_against_real_payloads() -> None:
    bench = Bench()
    bench.car.inject("brake_left", "open_circuit")
    report = bench.run(4)
    faults = json.loads(FaultsPayload.of("demo-car", report).encode())
    telemetry = json.loads(TelemetryPayload.of("demo-car", report).encode())
    entities = _device_payload()["components"]

    def component(part: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(
            ComponentPayload.of(report.components[part], report.at).encode()
        )
        return payload

    problem = entities["brake_left_problem"]
    assert render(problem["value_template"], component("brake_left")) == "ON"
    assert (
        render(entities["brake_right_problem"]["value_template"], component("brake_right")) == "OFF"
    )
    attributes = json.loads(render(problem["json_attributes_template"], faults))
    assert attributes["failure"] == "open_circuit"
    assert attributes["dtc"] == "B1200"
    assert attributes["since"] == faults["faults"][0]["since"]
    healthy = json.loads(render(entities["reverse_problem"]["json_attributes_template"], faults))
    assert healthy == {
        "failure": None,
        "dtc": None,
        "since": None,
        "status": None,
        "consequence_of": None,
    }
    assert render(entities["warning_bulb"]["value_template"], faults) == "ON"
    assert render(entities["warning_battery"]["value_template"], faults) == "OFF"
    assert 13.0 < float(render(entities["bus_voltage"]["value_template"], telemetry)) < 15.0
    assert 0.0 <= float(render(entities["battery_soc"]["value_template"], telemetry)) <= 100.0
    assert float(render(entities["alternator_current"]["value_template"], telemetry)) > 2.0


async def test_discovery_is_published_republished_for_home_assistant_and_removed(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    config = service_settings(*broker, tmp_path, homeassistant__prefix=prefix)
    device_topic = homeassistant.device_topic(config)
    service = Service(config)
    async with subscribed(*broker, f"{prefix}/#") as sub, running(service):
        await sub.wait_for(lambda: sub.on(device_topic), what="discovery")
        first = json.loads(sub.on(device_topic)[0])
        assert first["components"]["bcm_problem"]["state_topic"].endswith("/components/bcm")
        # Home Assistant restarts and says so: the discovery comes again.
        async with subscribed(*broker, "nothing/at/all") as ha:
            await ha.client.publish(f"{prefix}/status", b"online", qos=1)
        await sub.wait_for(lambda: len(sub.on(device_topic)) >= 2, what="rediscovery")
        # Turned off by a reload: every discovery topic gets an empty retained message.
        service.settings = service.settings.model_copy(
            update={
                "homeassistant": service.settings.homeassistant.model_copy(
                    update={"discovery": False}
                )
            }
        )
        service.publisher.settings = service.settings
        service.publisher.announce_to_home_assistant()
        await sub.wait_for(lambda: sub.on(device_topic)[-1] == b"", what="removal")
    # A newcomer finds no discovery left: retained messages arrive before a live marker does.
    async with subscribed(*broker, f"{prefix}/#") as late:
        await late.client.publish(f"{prefix}/marker", b"end", qos=1)
        await late.wait_for(lambda: late.on(f"{prefix}/marker"), what="the marker")
        assert late.on(device_topic) == []


@pytest.mark.parametrize("mode", ["device", "entity"])
def test_sample_discovery_payload_is_valid_json(mode: str) -> None:
    messages = homeassistant.discovery_messages(settings(homeassistant__mode=mode))
    for payload in messages.values():
        if payload is not None:
            assert json.loads(json.dumps(payload)) == payload
