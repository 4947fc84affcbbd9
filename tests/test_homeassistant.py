"""Home Assistant discovery: payloads checked against Home Assistant's documented discovery keys
(homeassistant/components/mqtt: schemas.py DEVICE_DISCOVERY_SCHEMA, the binary_sensor, sensor and
button PLATFORM_SCHEMAs and MQTT_ENTITY_COMMON_SCHEMA), templates rendered with Jinja2 against
real payloads, the discovery life cycle against a real broker, and the change of discovery mode
(Home Assistant's documented `migrate_discovery` procedure) message by message. A real Home
Assistant runs against the daemon in test_home_assistant_real.py."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import pytest
from structlog.testing import capture_logs

from carlightd.app.daemon import Service
from carlightd.config import Settings
from carlightd.contract.payloads import ComponentPayload, FaultsPayload, TelemetryPayload
from carlightd.outputs.mqtt import discovery_record, homeassistant
from carlightd.outputs.mqtt.publisher import Publisher
from tests.brokers import Subscriber, subscribed, unique_base_topic
from tests.conftest import running, service_settings, wait_until
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


def test_entity_mode_has_one_message_per_entity_and_nothing_on_the_device_topic() -> None:
    config = settings(homeassistant__mode="entity")
    messages = homeassistant.discovery_messages(config)
    # Anything on the device topic would reach these entities (same discovery ids) and be
    # refused by Home Assistant as a conflicting discovery message.
    assert homeassistant.device_topic(config) not in messages
    assert all(payload is not None for payload in messages.values())
    assert len(messages) == len(config.components) + 3 + 3 + 1
    topic = "homeassistant/binary_sensor/carlightd_demo_car/brake_left_problem/config"
    payload = messages[topic]
    assert payload is not None
    assert "platform" not in payload  # the platform is in the topic
    assert set(payload) <= ENTITY_COMMON_KEYS | PLATFORM_KEYS["binary_sensor"]
    assert payload["device"]["identifiers"] == ["carlightd_demo_car"]


def test_device_mode_has_the_device_topic_only() -> None:
    assert list(homeassistant.discovery_messages(settings())) == [
        "homeassistant/device/carlightd_demo_car/config"
    ]


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
    # How often it was confirmed since the last clear, a number as the fault list has it.
    assert attributes["occurrences"] == faults["faults"][0]["occurrences"]
    assert isinstance(attributes["occurrences"], int)
    assert not isinstance(attributes["occurrences"], bool)
    healthy = json.loads(render(entities["reverse_problem"]["json_attributes_template"], faults))
    assert healthy == {
        "failure": None,
        "dtc": None,
        "since": None,
        "status": None,
        "consequence_of": None,
        "occurrences": None,
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


# --- a change of discovery mode, as Home Assistant documents it ----------------------------------

MIGRATE = {"migrate_discovery": True}
# Home Assistant's discovery topic pattern (homeassistant/components/mqtt/discovery.py).
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def kinds(steps: list[tuple[str, dict[str, Any] | None]]) -> list[tuple[str, str]]:
    """(topic, what) with `what` one of config, migrate, empty."""
    return [
        (topic, "empty" if p is None else "migrate" if p == MIGRATE else "config")
        for topic, p in steps
    ]


def test_every_discovery_topic_is_one_home_assistant_accepts() -> None:
    for mode in ("device", "entity"):
        config = settings(homeassistant__mode=mode, vehicle__id="car-2_b")
        for topic in homeassistant.discovery_messages(config):
            prefix, _, rest = topic.partition("/")
            assert prefix == "homeassistant"
            match = TOPIC_MATCHER.fullmatch(rest)
            assert match is not None, topic
            assert match["node_id" if mode == "entity" else "object_id"] == "carlightd_car_2_b"


def test_entity_to_device_migrates_then_announces_then_empties_the_old_topics() -> None:
    config = settings()
    last = homeassistant.platforms(config)
    steps = homeassistant.transition(config, "entity", last)
    old = [homeassistant.entity_topic(config, p, k) for k, p in last.items()]
    device = homeassistant.device_topic(config)
    assert kinds(steps) == [
        *[(t, "migrate") for t in old],
        (device, "config"),
        *[(t, "empty") for t in old],
    ]
    assert steps[len(old)][1] == homeassistant.discovery_messages(config)[device]


def test_device_to_entity_is_the_documented_rollback() -> None:
    config = settings(homeassistant__mode="entity")
    steps = homeassistant.transition(config, "device", homeassistant.platforms(config))
    device = homeassistant.device_topic(config)
    configs = homeassistant.discovery_messages(config)
    assert kinds(steps) == [
        (device, "migrate"),
        *[(t, "config") for t in configs],
        (device, "empty"),
    ]
    assert dict(steps[1:-1]) == configs


@pytest.mark.parametrize("mode", ["device", "entity"])
def test_no_change_or_unknown_announces_the_current_mode_and_empties_nothing(mode: str) -> None:
    config = settings(homeassistant__mode=mode)
    current = homeassistant.discovery_messages(config)
    for last_mode in (mode, None, "off"):
        steps = homeassistant.transition(config, last_mode, homeassistant.platforms(config))  # type: ignore[arg-type]
        assert dict(steps) == current
        assert all(payload is not None for _, payload in steps)


def test_turning_off_removes_the_way_it_was_announced() -> None:
    config = settings(homeassistant__discovery=False)
    last = homeassistant.platforms(config)
    device = homeassistant.device_topic(config)
    assert homeassistant.transition(config, "device", last) == [(device, None)]
    entity = homeassistant.transition(config, "entity", last)
    assert kinds(entity) == [
        (homeassistant.entity_topic(config, p, k), "empty") for k, p in last.items()
    ]
    # Not known how it was announced: every topic of both modes, as before.
    unknown = homeassistant.transition(config, None, {})
    assert {t for t, _ in unknown} == set(homeassistant.discovery_messages(config))
    assert all(payload is None for _, payload in unknown)
    assert homeassistant.transition(config, "off", last) == []


def test_parts_removed_while_the_daemon_was_stopped_are_removed_in_every_transition() -> None:
    config = settings()
    last = {**homeassistant.platforms(config), "fog_rear_problem": "binary_sensor"}
    fog_entity = homeassistant.entity_topic(config, "binary_sensor", "fog_rear_problem")
    device = homeassistant.device_topic(config)
    # Same mode: the device payload names it with nothing but its platform.
    [(topic, payload)] = homeassistant.transition(config, "device", last)
    assert topic == device
    assert payload is not None
    assert payload["components"]["fog_rear_problem"] == {"platform": "binary_sensor"}
    # entity -> device: its old topic is emptied (removed), never migrated.
    steps = homeassistant.transition(config, "entity", last)
    assert (fog_entity, None) in steps
    assert (fog_entity, MIGRATE) not in steps
    [migrated] = [payload for topic, payload in steps if topic == device]
    assert migrated is not None
    assert "fog_rear_problem" not in migrated["components"]
    # device -> entity: removed from the device first, then the rollback.
    entity_config = settings(homeassistant__mode="entity")
    first, second = homeassistant.transition(entity_config, "device", last)[:2]
    assert first[0] == device
    assert first[1] is not None
    assert first[1]["components"]["fog_rear_problem"] == {"platform": "binary_sensor"}
    assert second == (device, MIGRATE)


# --- the record of the last discovery, in the state directory ------------------------------------


def test_record_round_trip_and_atomic_write(tmp_path: Path) -> None:
    record = discovery_record.Announced(
        mode="entity", prefix="homeassistant", node="carlightd_demo_car", entities={"a": "sensor"}
    )
    assert discovery_record.load(tmp_path) is None  # none yet: unknown, and nothing logged
    assert discovery_record.save(tmp_path / "new" / "dir", record)
    assert discovery_record.load(tmp_path / "new" / "dir") == record
    assert [p.name for p in (tmp_path / "new" / "dir").iterdir()] == ["discovery.json"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not a discovery record"),
        (b'{"format": "carlightd.fault-memory", "version": 1}', "not a discovery record"),
        (b'{"mode": "sideways", "prefix": "p", "node": "n", "entities": {}}', "mode"),
        (b"\xff\xfe" * 10, "not a discovery record"),
        (b" " * (discovery_record.MAX_RECORD_BYTES + 1), "too large"),
    ],
)
def test_a_corrupt_record_is_unknown_and_logged(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "discovery.json").write_bytes(content)
    with capture_logs() as logs:
        assert discovery_record.load(tmp_path) is None
    [line] = [e for e in logs if e["event"] == "discovery_record_unusable"]
    assert problem in line["problem"]


def test_a_record_that_is_not_a_file_is_unknown_and_cannot_be_saved(tmp_path: Path) -> None:
    (tmp_path / "discovery.json").mkdir()
    record = discovery_record.Announced(mode="off", prefix="p", node="n", entities={})
    with capture_logs() as logs:
        assert discovery_record.load(tmp_path) is None
        assert not discovery_record.save(tmp_path, record)
    events = [e["event"] for e in logs]
    assert events == ["discovery_record_unusable", "discovery_record_not_saved"]
    assert [p.name for p in tmp_path.iterdir()] == ["discovery.json"]  # no temporary file left


# --- against a real broker: what a Home Assistant would receive ----------------------------------


def discovery_settings(
    broker: tuple[str, int], state: Path, prefix: str, root: str, **overrides: Any
) -> Settings:
    return service_settings(
        *broker,
        state,
        homeassistant__prefix=prefix,
        mqtt__base_topic=root,
        **overrides,
    )


def recorded(state: Path) -> str | None:
    record = discovery_record.load(state)
    return None if record is None else record.mode


async def settled(sub: Subscriber, prefix: str) -> int:
    """Everything published so far has arrived: a marker of our own comes after it."""
    marker = f"{prefix}/marker/{uuid.uuid4().hex[:6]}"
    await sub.client.publish(marker, b"m", qos=1)
    await sub.wait_for(lambda: sub.on(marker), what="the marker")
    return next(i for i, m in enumerate(sub.messages) if m[0] == marker)


def seen(sub: Subscriber, start: int, end: int) -> list[tuple[str, str]]:
    """The discovery messages between two markers, as (topic, config | migrate | empty)."""
    out = []
    for topic, payload, _ in sub.messages[start:end]:
        if not topic.endswith("/config"):
            continue
        what = (
            "empty" if payload == b"" else "migrate" if json.loads(payload) == MIGRATE else "config"
        )
        out.append((topic, what))
    return out


async def run_until(config: Settings, state: Path, mode: str) -> None:
    """A daemon run that ends once the broker has acknowledged its discovery change."""
    async with running(Service(config, heartbeat=False)):
        await wait_until(lambda: recorded(state) == mode)


@pytest.mark.parametrize("mode", ["device", "entity"])
async def test_an_ordinary_restart_and_home_assistant_start_send_only_the_current_mode(
    broker: tuple[str, int], tmp_path: Path, mode: str
) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    config = discovery_settings(broker, state, prefix, root, homeassistant__mode=mode)
    current = [(t, "config") for t in homeassistant.discovery_messages(config)]
    await run_until(config, state, mode)
    async with subscribed(*broker, f"{prefix}/#") as sub:
        start = await settled(sub, prefix)

        def count() -> int:
            return len(seen(sub, start, len(sub.messages)))

        async with running(Service(config, heartbeat=False)):
            await sub.wait_for(lambda: count() >= len(current), what="the discovery")
            await sub.client.publish(f"{prefix}/status", b"online", qos=1)
            await sub.wait_for(lambda: count() >= 2 * len(current), what="the rediscovery")
        end = await settled(sub, prefix)
    # The current mode's discovery (at connect, and again at Home Assistant's birth; a message
    # cut short by the stop may come once more), nothing else: no empty message on the other
    # mode's topics.
    assert set(seen(sub, start, end)) == set(current)


@pytest.mark.parametrize(("before", "after"), [("entity", "device"), ("device", "entity")])
async def test_a_mode_change_is_migrated_once_in_home_assistants_order(
    broker: tuple[str, int], tmp_path: Path, before: str, after: str
) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    old = discovery_settings(broker, state, prefix, root, homeassistant__mode=before)
    new = discovery_settings(broker, state, prefix, root, homeassistant__mode=after)
    await run_until(old, state, before)
    async with subscribed(*broker, f"{prefix}/#") as sub:
        start = await settled(sub, prefix)
        await run_until(new, state, after)
        middle = await settled(sub, prefix)
        # A restart after the change: the current discovery, nothing else.
        async with running(Service(new, heartbeat=False)):
            await sub.wait_for(lambda: seen(sub, middle, len(sub.messages)), what="discovery")
        end = await settled(sub, prefix)
    expected = kinds(homeassistant.transition(new, before, homeassistant.platforms(old)))  # type: ignore[arg-type]
    migration = seen(sub, start, middle)
    # The documented order, then (retained topics, republished at connect) nothing that
    # touches the old mode's topics.
    assert migration[: len(expected)] == expected
    current = set(homeassistant.discovery_messages(new))
    assert {(t, w) for t, w in migration[len(expected) :]} <= {(t, "config") for t in current}
    assert set(seen(sub, middle, end)) == {(t, "config") for t in current}
    # The broker keeps the new mode only: a newcomer (a Home Assistant starting) sees nothing
    # on the old topics.
    async with subscribed(*broker, f"{prefix}/#") as late:
        marker = await settled(late, prefix)
        # (The embedded fallback broker also replays other retained topics: only ours count.)
        retained = {t for t, _, r in late.messages[:marker] if r and t.startswith(f"{prefix}/")}
        assert retained == current


async def test_a_live_reload_migrates_too(broker: tuple[str, int], tmp_path: Path) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    entity = discovery_settings(broker, state, prefix, root, homeassistant__mode="entity")
    device = entity.model_copy(
        update={"homeassistant": entity.homeassistant.model_copy(update={"mode": "device"})}
    )
    service = Service(entity, heartbeat=False)
    async with subscribed(*broker, f"{prefix}/#") as sub, running(service):
        await wait_until(lambda: recorded(state) == "entity")
        start = await settled(sub, prefix)
        assert "homeassistant" in service._apply(device)[0]
        await wait_until(lambda: recorded(state) == "device")
        end = await settled(sub, prefix)
    expected = kinds(homeassistant.transition(device, "entity", homeassistant.platforms(entity)))
    assert seen(sub, start, end)[: len(expected)] == expected


async def test_turning_discovery_off_removes_once_then_publishes_nothing(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    on = discovery_settings(broker, state, prefix, root)
    off = discovery_settings(broker, state, prefix, root, homeassistant__discovery=False)
    await run_until(on, state, "device")
    async with subscribed(*broker, f"{prefix}/#") as sub:
        start = await settled(sub, prefix)
        await run_until(off, state, "off")
        middle = await settled(sub, prefix)
        await run_until(off, state, "off")
        end = await settled(sub, prefix)
    assert seen(sub, start, middle) == [(homeassistant.device_topic(on), "empty")]
    assert seen(sub, middle, end) == []


async def test_unknown_record_announces_as_it_is_and_a_bad_one_never_stops_the_daemon(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    state.mkdir()
    (state / "discovery.json").write_bytes(b"\x00garbage")
    config = discovery_settings(broker, state, prefix, root)
    async with subscribed(*broker, f"{prefix}/#") as sub:
        start = await settled(sub, prefix)
        with capture_logs() as logs:
            await run_until(config, state, "device")
        end = await settled(sub, prefix)
    assert "discovery_record_unusable" in [e["event"] for e in logs]
    assert seen(sub, start, end) == [(homeassistant.device_topic(config), "config")]
    # A record that cannot be written (a directory in its place): logged, discovery goes on.
    (state / "discovery.json").unlink()
    (state / "discovery.json").mkdir()
    async with subscribed(*broker, f"{prefix}/#") as sub:
        start = await settled(sub, prefix)
        with capture_logs() as logs:
            async with running(Service(config, heartbeat=False)):
                await wait_until(
                    lambda: any(e["event"] == "discovery_record_not_saved" for e in logs)
                )
                await sub.wait_for(lambda: seen(sub, start, len(sub.messages)), what="discovery")
        end = await settled(sub, prefix)
    assert seen(sub, start, end) == [(homeassistant.device_topic(config), "config")]


class FailsAfter:
    """A real client that fails after `n` more publishes (a connection lost mid-migration)."""

    def __init__(self, client: aiomqtt.Client, n: int) -> None:
        self.client = client
        self.left = n

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        if self.left == 0:
            raise aiomqtt.MqttError("connection lost (injected)")
        self.left -= 1
        await self.client.publish(*args, **kwargs)


async def test_an_interrupted_migration_resumes_and_a_new_change_waits_for_it(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    prefix, root, state = f"ha-{uuid.uuid4().hex[:8]}", unique_base_topic(), tmp_path / "state"
    entity = discovery_settings(broker, state, prefix, root, homeassistant__mode="entity")
    device = discovery_settings(broker, state, prefix, root, homeassistant__mode="device")
    platforms = homeassistant.platforms(entity)
    discovery_record.save(
        state,
        discovery_record.Announced(
            mode="entity", prefix=prefix, node="carlightd_demo_car", entities=platforms
        ),
    )
    publisher = Publisher(device)
    forward = kinds(homeassistant.transition(device, "entity", platforms))
    back = kinds(homeassistant.transition(entity, "device", platforms))
    async with subscribed(*broker, f"{prefix}/#") as sub, aiomqtt.Client(*broker) as client:
        start = await settled(sub, prefix)
        with pytest.raises(aiomqtt.MqttError):
            await publisher._send_home_assistant_change(FailsAfter(client, 10))  # type: ignore[arg-type]
        assert recorded(state) == "entity"  # not all acknowledged: not remembered
        # Switched back meanwhile: the half-sent change is finished first, then rolled back.
        publisher.settings = entity
        publisher.announce_to_home_assistant()
        await publisher._send_home_assistant_change(client)
        end = await settled(sub, prefix)
    assert recorded(state) == "entity"
    assert seen(sub, start, end) == forward + back


def test_a_record_for_another_prefix_is_left_alone(tmp_path: Path) -> None:
    config = service_settings("127.0.0.1", 1, tmp_path, homeassistant__mode="entity")
    elsewhere = discovery_record.Announced(
        mode="device", prefix="old-prefix", node="carlightd_demo_car", entities={}
    )
    discovery_record.save(tmp_path, elsewhere)
    with capture_logs() as logs:
        publisher = Publisher(config)
    [line] = [e for e in logs if e["event"] == "discovery_record_elsewhere"]
    assert line["recorded"] == "old-prefix/…/carlightd_demo_car"
    # Announced as if unknown: the current mode only, nothing emptied anywhere.
    assert dict(publisher._ha_steps) == {
        t: json.dumps(p).encode() for t, p in homeassistant.discovery_messages(config).items()
    }


def test_a_record_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("precious")
    (tmp_path / "discovery.json").symlink_to(target)
    record = discovery_record.Announced(mode="off", prefix="p", node="n", entities={})
    with capture_logs() as logs:
        assert discovery_record.load(tmp_path) is None
    assert [e["problem"] for e in logs] == ["not a regular file"]
    assert discovery_record.save(tmp_path, record)  # the link is replaced, never written through
    assert target.read_text() == "precious"
    assert discovery_record.load(tmp_path) == record
