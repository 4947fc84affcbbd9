"""A real Home Assistant 2025.4.4 against the daemon: onboarding, the MQTT config entry, the
entities and their states through its REST API, a fault seen in Home Assistant, its button
reaching the daemon, and its log free of discovery warnings across daemon restarts, a Home
Assistant restart and switches of the discovery mode.

Home Assistant needs Python 3.13; the test is skipped where there is none, and in a CI pass that
sets CARLIGHTD_SKIP_HOME_ASSISTANT (to the reason; CI runs it in its Python 3.11 pass). Its venv is
made on first use (a few minutes) and cached in ~/.cache/carlightd-test/, keyed on the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from carlightd.app.daemon import Service
from carlightd.config import Settings
from carlightd.outputs.mqtt import discovery_record, homeassistant
from tests.brokers import PrivateBroker, free_port, listening, subscribed
from tests.conftest import running, service_settings, using_embedded_broker

pytestmark = [pytest.mark.home_assistant, pytest.mark.timeout(1800)]

HA_VERSION = "2025.4.4"
# Home Assistant installs an integration's requirements when it loads it; installed up front
# instead (it starts with --skip-pip): MQTT's client and the frontend, which always loads.
REQUIREMENTS = (
    f"homeassistant=={HA_VERSION}",
    "paho-mqtt==2.1.0",
    "home-assistant-frontend==20250411.0",
)
CACHE = Path.home() / ".cache" / "carlightd-test"
INSTALLED_MARK = ".carlightd-installed"
START_TIMEOUT_S = 180.0  # a first start writes its whole .storage
WAIT_S = 60.0
USER, PASSWORD = "carlightd", "carlightd-test-password"
CONFLICT = "Received a conflicting MQTT discovery message"
# Set (to the reason) by a CI pass that leaves the real Home Assistant to another pass.
SKIP_ENV = "CARLIGHTD_SKIP_HOME_ASSISTANT"


def python_313() -> str | None:
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.13.*/bin/python3.13"))
    if pyenv:
        return str(pyenv[-1])
    return shutil.which("python3.13")


@pytest.fixture(scope="session")
def home_assistant_venv(pytestconfig: pytest.Config) -> Path:
    """A venv with Home Assistant, made once and kept (a lock keeps two test runs apart)."""
    if reason := os.environ.get(SKIP_ENV):
        pytest.skip(reason)  # CI runs it in one of its passes only: it tests HA, not our Python
    python = python_313()
    if python is None:
        pytest.skip("Home Assistant 2025.4 needs Python 3.13 (none in ~/.pyenv or on PATH)")
    venv = CACHE / f"ha-{HA_VERSION}-venv"
    wanted = "\n".join(REQUIREMENTS)
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"ha-{HA_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mark = venv / INSTALLED_MARK
        if mark.exists() and mark.read_text() == wanted and (venv / "bin" / "hass").exists():
            return venv
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            install(python, venv, wanted)
    return venv


def install(python: str, venv: Path, wanted: str) -> None:
    # Shown as it goes: the first install takes minutes, and must not look like a hang.
    def say(line: str) -> None:
        sys.stderr.write(f"[home assistant venv] {line}\n")
        sys.stderr.flush()

    shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
    say(f"creating {venv} with {python}")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off"]
    say(f"pip install {' '.join(REQUIREMENTS)} (several minutes the first time)")
    started = time.monotonic()
    with subprocess.Popen(
        [*command, *REQUIREMENTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            if line.startswith(("Collecting", "Installing", "Successfully", "ERROR")):
                say(line.rstrip()[:160])
    if pip.returncode != 0:
        raise RuntimeError(f"pip install of Home Assistant failed (exit {pip.returncode})")
    (venv / INSTALLED_MARK).write_text(wanted)  # last: only a complete venv is reused
    say(f"installed in {time.monotonic() - started:.0f} s")


@dataclass
class HomeAssistant:
    """One Home Assistant: its config directory, port, process and an API session."""

    venv: Path
    config_dir: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    token: str = ""
    logs: list[Path] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # Core settings given here, so onboarding needs only its user step.
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: carlightd test\n"
            "  latitude: 52.5\n"
            "  longitude: 13.4\n"
            "  elevation: 0\n"
            "  unit_system: metric\n"
            "  time_zone: UTC\n"
            "  country: DE\n"
            "  currency: EUR\n"
            "http:\n"
            "  server_host: 127.0.0.1\n"
            f"  server_port: {self.port}\n"
            "logger:\n"
            "  default: warning\n"
        )

    async def start(self) -> None:
        log_file = self.config_dir / f"run-{len(self.logs) + 1}.log"
        self.logs.append(log_file)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        with (self.config_dir / f"run-{len(self.logs)}.stderr").open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                str(self.venv / "bin" / "hass"),
                "--config",
                str(self.config_dir),
                "--skip-pip",
                "--log-file",
                str(log_file),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not listening("127.0.0.1", self.port):
            if self.process.returncode is not None:
                raise AssertionError(f"Home Assistant exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant did not listen: {self.tail()}")
            await asyncio.sleep(0.2)
        # Listening comes before the API is set up: wait for the API itself.
        await self.until(self.ready, "the API")

    async def ready(self) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(f"{self.url}/api/onboarding") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    def tail(self) -> str:
        text = "".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        return text[-3000:]

    async def stop(self) -> None:
        """By its PID: SIGTERM, then SIGKILL if it has not stopped in 60 s."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(60):
                await process.wait()
        except TimeoutError:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()

    async def until(self, check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
        """Poll an async predicate until it holds (a generous timeout, no fixed sleeps)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log: {self.tail()}")
            await asyncio.sleep(0.2)

    async def call(self, method: str, path: str, body: Any = None, *, form: bool = False) -> Any:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
        async with self.session.request(
            method, f"{self.url}{path}", headers=headers, **kwargs
        ) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            return json.loads(text) if text else None

    async def onboard(self) -> None:
        """The onboarding API's user step, then an access token from the auth code."""
        client_id = f"{self.url}/"
        steps = await self.call("GET", "/api/onboarding")
        assert {"step": "user", "done": False} in steps
        user = await self.call(
            "POST",
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "carlightd test",
                "username": USER,
                "password": PASSWORD,
                "language": "en",
            },
        )
        token = await self.call(
            "POST",
            "/auth/token",
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id},
            form=True,
        )
        self.token = token["access_token"]

    async def add_mqtt(self, port: int) -> dict[str, Any]:
        """The MQTT integration, through the config entry flow the UI uses."""
        flow = await self.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow["step_id"] == "broker", flow
        done = await self.call(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": port},
        )
        assert done["type"] == "create_entry", done
        entry: dict[str, Any] = done["result"]
        return entry

    async def states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = await self.call("GET", "/api/states")
        return states

    async def websocket(self, command: dict[str, Any]) -> Any:
        """One command on the websocket API (what the frontend uses; the registries are only
        there)."""
        assert self.session is not None
        async with self.session.ws_connect(f"{self.url}/api/websocket") as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": self.token})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, **command})
            reply = await ws.receive_json()
        assert reply["success"], reply
        return reply["result"]

    async def registry(self, unique_prefix: str) -> dict[str, str]:
        """unique id -> entity registry entry id of MQTT entities: an entry removed and made anew
        (its history, name and area lost) gets a new id."""
        entries = await self.websocket({"type": "config/entity_registry/list"})
        return {
            e["unique_id"]: e["id"]
            for e in entries
            if e["platform"] == "mqtt" and e["unique_id"].startswith(unique_prefix)
        }

    async def mqtt_diagnostics(self, entry_id: str) -> dict[str, Any]:
        """The MQTT integration's diagnostics: its devices, and how each entity was discovered."""
        download = await self.call("GET", f"/api/diagnostics/config_entry/{entry_id}")
        data: dict[str, Any] = download["data"]
        return data

    def log_lines(self, run: int | None = None) -> list[str]:
        paths = self.logs if run is None else [self.logs[run - 1]]
        return [
            line
            for path in paths
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()
        ]


@pytest.fixture
async def home_assistant(home_assistant_venv: Path, tmp_path: Path) -> AsyncIterator[HomeAssistant]:
    ha = HomeAssistant(home_assistant_venv, tmp_path / "ha-config")
    ha.write_config()
    async with aiohttp.ClientSession() as session:
        ha.session = session
        try:
            await ha.start()
            await ha.onboard()
            yield ha
        finally:
            await ha.stop()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[int]:
    """A broker of this test's own: Home Assistant sees no other test's discovery."""
    embedded = using_embedded_broker() or not PrivateBroker.available()
    broker = PrivateBroker(tmp_path, embedded=embedded).start()
    try:
        yield broker.port
    finally:
        broker.stop()


def mode_settings(port: int, state: Path, root: str, mode: str) -> Settings:
    return service_settings(
        "127.0.0.1",
        port,
        state,
        mqtt__base_topic=root,
        homeassistant__mode=mode,
        diagnostics__telemetry_s=0.5,
    )


def expected_names(config: Settings) -> dict[str, str]:
    """friendly_name -> platform of every entity, as Home Assistant names them (device name,
    then entity name)."""
    device = f"carlightd {config.vehicle.id}"
    return {
        f"{device} {entity['name']}": entity["platform"]
        for entity in homeassistant.components(config).values()
    }


def ours(states: list[dict[str, Any]], names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Our entities in Home Assistant's states, by friendly name."""
    return {
        s["attributes"]["friendly_name"]: s
        for s in states
        if s["attributes"].get("friendly_name") in names
    }


def discovery_problems(lines: list[str]) -> list[str]:
    """Warnings and errors of Home Assistant's MQTT integration (discovery and its entities),
    but for the barriers' own."""
    return [
        line
        for line in lines
        if "homeassistant.components.mqtt" in line
        and (" WARNING " in line or " ERROR " in line)
        and BARRIER not in line
    ]


BARRIER = "carlightd_barrier_"


async def barrier(ha: HomeAssistant, port: int) -> None:
    """Everything Home Assistant logged so far is in its log file: a discovery message it must
    refuse (logged at once, in order) comes after the rest, and is waited for."""
    marker = f"{BARRIER}{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(f"homeassistant/sensor/{marker}/config", b"{", qos=1)

    async def logged() -> bool:
        return any(marker in line for line in ha.log_lines(len(ha.logs)))

    await ha.until(logged, "the log barrier")


async def restart(ha: HomeAssistant, port: int) -> None:
    """Stop Home Assistant and start it again, until its MQTT birth message (`online`, sent a
    few seconds after the start) is out: what answers it is part of the restart."""
    async with subscribed("127.0.0.1", port, "homeassistant/status") as status:
        await ha.stop()
        await ha.start()
        await status.wait_for(
            lambda: status.on("homeassistant/status")[-1:] == [b"online"],
            timeout_s=WAIT_S,
            what="Home Assistant's birth message",
        )


async def test_home_assistant_sees_the_car_and_stays_quiet(
    home_assistant: HomeAssistant, mqtt_broker: int, tmp_path: Path
) -> None:
    ha, port = home_assistant, mqtt_broker
    entry = await ha.add_mqtt(port)
    assert entry["state"] == "loaded", entry
    state_dir, root = tmp_path / "state", f"ha-real-{uuid.uuid4().hex[:8]}"
    device_mode = mode_settings(port, state_dir, root, "device")
    entity_mode = mode_settings(port, state_dir, root, "entity")
    names = expected_names(device_mode)
    parts = [c.id for c in device_mode.components]
    assert len(names) == len(parts) + 3 + 3 + 1  # problem per part, lamps, sensors, button
    car = f"carlightd {device_mode.vehicle.id}"
    unique_prefix = f"{homeassistant.node_id(device_mode.vehicle.id)}_"
    vehicle_root = f"{root}/{device_mode.vehicle.id}"

    async def all_available() -> dict[str, dict[str, Any]] | None:
        found = ours(await ha.states(), names)
        ready = len(found) == len(names) and all(
            s["state"] != "unavailable" and (names[n] == "button" or s["state"] != "unknown")
            for n, s in found.items()
        )  # a button has no state ("unknown") until it is pressed
        return found if ready else None

    async def recorded(mode: str) -> bool:
        record = discovery_record.load(state_dir)
        return record is not None and record.mode == mode

    async def discovered_from(topics: set[str]) -> dict[str, Any] | None:
        """Home Assistant's own account: every entity discovered from one of these topics."""
        data = await ha.mqtt_diagnostics(entry["entry_id"])
        by_entity = {
            e["entity_id"]: e["discovery_data"]["topic"]
            for e in data["mqtt_debug_info"]["entities"]
        }
        if set(by_entity) != set(entity_ids.values()) or set(by_entity.values()) != topics:
            return None
        return data

    async def same_entities(config: Settings, what: str) -> None:
        """A daemon run: every entity discovered from this mode's topics, on the same device
        and under the same entity id (Home Assistant kept its registry entries), with a state."""
        topics = set(homeassistant.discovery_messages(config))
        async with running(Service(config, heartbeat=False)):
            await ha.until(lambda: recorded(config.homeassistant.mode), f"{what}: discovery")
            data = await ha.until(lambda: discovered_from(topics), f"{what}: discovered")
            [device] = data["devices"]
            assert device["id"] == device_id, what  # never removed and made anew
            assert await ha.registry(unique_prefix) == registry, what  # nor the entities
            found = await ha.until(all_available, f"{what}: every entity with a state")
            assert {n: s["entity_id"] for n, s in found.items()} == entity_ids, what

    # 1. The daemon connects: every entity appears, with a state.
    async with running(Service(device_mode, heartbeat=False)):
        found = await ha.until(all_available, "every entity with a state")
        entity_ids = {name: s["entity_id"] for name, s in found.items()}
        data = await ha.until(
            lambda: discovered_from({homeassistant.device_topic(device_mode)}), "discovered"
        )
        [device] = data["devices"]
        device_id = device["id"]
        assert device["name"] == car
        registry = await ha.registry(unique_prefix)
        assert len(registry) == len(names)
        for name, platform in names.items():
            assert entity_ids[name].startswith(f"{platform}."), (name, entity_ids[name])
        brake = found[f"{car} Brake left"]
        assert brake["state"] == "off"
        assert brake["attributes"]["device_class"] == "problem"
        assert brake["attributes"]["failure"] is None
        assert brake["attributes"]["occurrences"] is None
        volts = found[f"{car} Bus voltage"]
        assert volts["attributes"]["unit_of_measurement"] == "V"
        assert 12.0 < float(volts["state"]) < 15.5
        assert 0.0 <= float(found[f"{car} Battery state of charge"]["state"]) <= 100.0

        # A fault, as any MQTT client may inject it: Home Assistant's sensor goes on.
        async with aiomqtt.Client("127.0.0.1", port) as client:
            request = {"component": "brake_left", "failure": "open_circuit"}
            await client.publish(f"{vehicle_root}/request/inject_fault", json.dumps(request), qos=1)

        async def brake_failed() -> dict[str, Any] | None:
            states = ours(await ha.states(), names)
            brake = states.get(f"{car} Brake left")
            lamp = states.get(f"{car} Bulb failure warning")
            if brake is None or lamp is None or (brake["state"], lamp["state"]) != ("on", "on"):
                return None
            return brake if brake["attributes"]["status"] == "confirmed" else None

        brake = await ha.until(brake_failed, "the brake lamp's problem sensor on")
        assert brake["attributes"]["failure"] == "open_circuit"
        assert brake["attributes"]["dtc"] == "B1200"
        assert brake["attributes"]["occurrences"] == 1  # confirmed once since the last clear

        # Home Assistant's button reaches the daemon as a clear_faults request.
        async with subscribed("127.0.0.1", port, f"{vehicle_root}/response/#") as responses:
            await ha.call(
                "POST",
                "/api/services/button/press",
                {"entity_id": entity_ids[f"{car} Clear fault memory"]},
            )
            [answer] = await responses.wait_for(
                lambda: responses.json_on(f"{vehicle_root}/response/clear_faults"),
                timeout_s=WAIT_S,
                what="the clear_faults response",
            )
        assert answer["status"] == "ok", answer
        assert answer["data"]["cleared"] >= 1

    # 2. The daemon connects again (a restart): the same entities, and not one warning.
    await same_entities(device_mode, "daemon restart")
    await barrier(ha, port)
    first_run = ha.log_lines(1)
    assert [line for line in first_run if CONFLICT in line] == []
    assert discovery_problems(first_run) == []
    figures = {"connects": 2, "conflicting_warnings_on_connect": 0}

    # 3. Switched to entity mode: migrated, the same entities; then restarted in that mode.
    seen = len(first_run)
    await same_entities(entity_mode, "switch to entity mode")
    await same_entities(entity_mode, "restart in entity mode")
    await barrier(ha, port)
    switch = ha.log_lines(1)[seen:]
    figures["conflicting_warnings_switch_to_entity"] = sum(CONFLICT in line for line in switch)
    # Home Assistant 2025.4 answers the documented clean-up of the old topics with at most one
    # conflicting-discovery warning per entity, once per switch; nothing else.
    assert figures["conflicting_warnings_switch_to_entity"] <= len(names), switch
    assert [line for line in discovery_problems(switch) if CONFLICT not in line] == []

    # 4. Home Assistant restarts, the daemon connects: its new log has not one warning.
    await restart(ha, port)
    await same_entities(entity_mode, "Home Assistant restart, entity mode")
    await barrier(ha, port)
    assert discovery_problems(ha.log_lines(2)) == []

    # 5. Back to device mode, the same.
    seen = len(ha.log_lines(2))
    await same_entities(device_mode, "switch back to device mode")
    await barrier(ha, port)
    switch = ha.log_lines(2)[seen:]
    figures["conflicting_warnings_switch_to_device"] = sum(CONFLICT in line for line in switch)
    assert figures["conflicting_warnings_switch_to_device"] <= len(names), switch
    assert [line for line in discovery_problems(switch) if CONFLICT not in line] == []

    # 6. Home Assistant restarts while the daemon runs: its birth message makes the daemon
    # announce again, and that is quiet too.
    discovery = homeassistant.device_topic(device_mode)
    async with running(Service(device_mode, heartbeat=False)):
        await ha.until(all_available, "every entity before a Home Assistant restart")
        async with subscribed("127.0.0.1", port, discovery) as announced:
            await announced.wait_for(lambda: announced.on(discovery), what="retained discovery")
            before = len(announced.on(discovery))
            await restart(ha, port)
            await announced.wait_for(
                lambda: len(announced.on(discovery)) > before,
                timeout_s=WAIT_S,
                what="the discovery announced again for Home Assistant",
            )
        found = await ha.until(all_available, "every entity after a Home Assistant restart")
        assert {n: s["entity_id"] for n, s in found.items()} == entity_ids
        await barrier(ha, port)
    assert discovery_problems(ha.log_lines(3)) == []
    figures["entities"] = len(entity_ids)
    sys.stderr.write(f"home assistant figures: {json.dumps(figures)}\n")
