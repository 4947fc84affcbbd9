"""The README's broker ACL (docs/mosquitto-acl.conf) on a real Mosquitto, with the real daemon.

Mosquitto 2.0 silently drops a publish that the ACL refuses (MQTT 3.1.1 has no way to say no:
the client still gets its PUBACK). So every "never arrives" below is checked after a barrier: a
later message from an allowed client that is seen, or answered, in its place. And a `control` user,
appended to the ACL in this test only, may write anything under `carlightd/`: its forgeries do
arrive, so the same checks would catch a missing ACL rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from carlightd.app.daemon import Service
from tests.brokers import PrivateBroker, Subscriber
from tests.conftest import running, service_settings, wait_until
from tests.test_tls_auth import Pki, pki  # noqa: F401 (the module's throwaway CA fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd for the password file"
)

ACL = Path(__file__).parents[1] / "docs" / "mosquitto-acl.conf"
README = Path(__file__).parents[1] / "README.md"
USERS = ("carlightd", "viewer", "workshop", "homeassistant", "control")
CONTROL = """
# The test's own positive control.
user control
topic readwrite carlightd/#
topic read homeassistant/#
"""


def password_of(user: str) -> str:
    return f"{user}-secret-7"


@dataclass
class AclBroker:
    broker: PrivateBroker
    tmp_path: Path
    host: str = "127.0.0.1"
    pki: Pki | None = None  # TLS, with the test CA and a client certificate

    def tls_context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        return context

    @property
    def port(self) -> int:
        return self.broker.port

    def client(self, user: str | None, password: str | None = None) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            username=user,
            password=password if password is not None else user and password_of(user),
            identifier=f"test-{user}-{uuid.uuid4().hex[:8]}",
            tls_context=self.tls_context(),
        )

    @contextlib.asynccontextmanager
    async def subscribed(self, user: str, *topic_filters: str) -> AsyncIterator[Subscriber]:
        async with self.client(user) as client:
            await client.subscribe([(f, 1) for f in topic_filters])
            subscriber = Subscriber(client)
            async with _pumping(subscriber):
                yield subscriber

    async def publish(self, user: str, topic: str, payload: str, *, retain: bool = False) -> None:
        """Publish and wait for the PUBACK: the broker has routed (or dropped) it by then."""
        async with self.client(user) as client:
            await client.publish(topic, payload, qos=1, retain=retain)

    def daemon(self, **overrides: Any) -> Service:
        secret = self.tmp_path / "carlightd-password"
        secret.write_text(password_of("carlightd") + "\n")
        if self.pki is not None:
            overrides["mqtt__tls"] = {
                "enabled": True,
                "ca_file": self.pki.ca,
                "cert_file": self.pki.client_cert,
                "key_file": self.pki.client_key,
            }
        settings = service_settings(
            self.host,
            self.port,
            self.tmp_path / "state",
            mqtt__base_topic="carlightd",  # what the ACL names
            mqtt__username="carlightd",
            mqtt__password_file=secret,
            vehicle__id=f"car-{uuid.uuid4().hex[:8]}",
            **overrides,
        )
        return Service(settings)


@contextlib.asynccontextmanager
async def _pumping(subscriber: Subscriber) -> AsyncIterator[None]:
    pump = asyncio.create_task(subscriber._pump())
    try:
        yield
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await pump


def make_passwords(tmp_path: Path) -> Path:
    passwords = tmp_path / "passwd"
    for index, user in enumerate(USERS):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwords), user, password_of(user)],
            check=True,
        )
    return passwords


@pytest.fixture
def acl_broker(tmp_path: Path, private_broker: Callable[..., PrivateBroker]) -> AclBroker:
    passwords = make_passwords(tmp_path)
    acl = tmp_path / "acl"
    acl.write_text(ACL.read_text() + CONTROL)
    broker = private_broker(
        listener=f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
    )
    return AclBroker(broker, tmp_path)


def latest(sub: Subscriber, topic: str) -> Any:
    payloads = sub.json_on(topic)
    return payloads[-1] if payloads else None


async def request(
    acl: AclBroker, user: str, root: str, command: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Send a request as `user` and wait for the daemon's answer with the same transaction."""
    transaction = uuid.uuid4().hex
    async with acl.subscribed(user, f"{root}/response/{command}") as sub:
        async with acl.client(user) as client:
            payload = json.dumps({**body, "transaction": transaction})
            await client.publish(f"{root}/request/{command}", payload, qos=1)

        def answer() -> Any:
            found = sub.json_on(f"{root}/response/{command}")
            return next((r for r in found if r.get("transaction") == transaction), None)

        response: dict[str, Any] = await sub.wait_for(answer, what=f"the {command} response")
        return response


async def test_the_daemon_works_under_its_own_rules(acl_broker: AclBroker) -> None:
    """Everything the daemon publishes reaches the broker (a missing write rule would silently
    drop it), and it hears requests and Home Assistant's `online`."""
    service = acl_broker.daemon()
    root = service.publisher.topics.root
    async with acl_broker.subscribed("control", f"{root}/#") as sub, running(service):
        await sub.wait_for(lambda: sub.on(f"{root}/availability")[-1:] == [b"online"])
        await sub.wait_for(lambda: sub.on(f"{root}/telemetry"), what="telemetry")
        response = await request(
            acl_broker,
            "workshop",
            root,
            "inject_fault",
            {"component": "brake_left", "failure": "open_circuit"},
        )
        assert response["status"] == "ok", response
        await sub.wait_for(
            lambda: any(e["type"] == "fault_confirmed" for e in sub.json_on(f"{root}/events")),
            what="the fault_confirmed event",
        )
        # Home Assistant announces itself: the discovery messages are sent again.
        discovery = [  # what is announced (the other mode's topics are emptied)
            t
            for t, p in service.publisher._retained.items()
            if t.startswith("homeassistant/") and p
        ]
        assert discovery
        async with acl_broker.subscribed("homeassistant", "homeassistant/#") as ha:
            await ha.wait_for(lambda: all(ha.on(t) for t in discovery), what="discovery")
            before = len(ha.messages)
            await acl_broker.publish("homeassistant", "homeassistant/status", "online")
            await ha.wait_for(
                lambda: len(ha.messages) >= before + len(discovery), what="discovery again"
            )
    # Stopped (so nothing changes any more): every retained topic the daemon holds, discovery and
    # ROOT/status included, is on the broker with the daemon's last word.
    assert service.publisher.backlog == 0
    expected = {t: p for t, p in service.publisher._retained.items() if p}
    assert f"{root}/status" in expected
    expected[f"{root}/availability"] = b"offline"
    async with acl_broker.subscribed("control", f"{root}/#", "homeassistant/#") as fresh:

        def missing() -> list[str]:
            return [t for t, p in expected.items() if fresh.on(t) != [p]]

        with contextlib.suppress(AssertionError):
            await fresh.wait_for(lambda: not missing(), what="every retained topic")
        assert not missing(), [(t, fresh.on(t)[:2], expected[t][:80]) for t in missing()]


async def test_a_viewers_inject_fault_never_reaches_the_daemon(acl_broker: AclBroker) -> None:
    service = acl_broker.daemon()
    root = service.publisher.topics.root
    async with acl_broker.subscribed("control", f"{root}/#") as sub, running(service):
        await sub.wait_for(
            lambda: (latest(sub, f"{root}/components/brake_left") or {}).get("status") == "ok",
            what="brake_left ok",
        )
        viewer_tx = "from-the-viewer"
        for command, body in (
            ("inject_fault", {"component": "brake_left", "failure": "open_circuit"}),
            ("set_ignition", {"state": "off"}),
            ("clear_faults", {}),
        ):
            await acl_broker.publish(
                "viewer",
                f"{root}/request/{command}",
                json.dumps({**body, "transaction": viewer_tx}),
            )
        # Barrier and positive control at once: the workshop's request, sent after the viewer's
        # and handled in order by the daemon, is answered, and its fault appears.
        response = await request(
            acl_broker,
            "workshop",
            root,
            "inject_fault",
            {"component": "tail_left", "failure": "open_circuit"},
        )
        assert response == {
            "status": "ok",
            "data": {"component": "tail_left", "failure": "open_circuit"},
            "transaction": response["transaction"],
        }
        await sub.wait_for(
            lambda: (
                [f["component"] for f in (latest(sub, f"{root}/faults") or {}).get("faults", [])]
                == ["tail_left"]
                and latest(sub, f"{root}/faults")["faults"][0]["status"] == "confirmed"
            ),
            what="tail_left confirmed",
        )
        # Several more cycles: a fault injected by the viewer would have shown by now.
        cycle = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycle + 5)
        await wait_until(lambda: service.publisher.backlog == 0)
        assert not [
            t
            for t, p, _ in sub.messages
            if t.startswith(f"{root}/response/") and viewer_tx in str(p)
        ]
        assert latest(sub, f"{root}/components/brake_left")["status"] == "ok"
        assert latest(sub, f"{root}/components/tail_left")["status"] == "failed"
        assert service.daemon.car.failures() == {"tail_left": {"open_circuit"}}
        assert service.daemon.car.ignition.value == "run"
        assert not [e for e in sub.json_on(f"{root}/events") if e["component"] == "brake_left"]


FORGERIES = {
    "availability": "offline",
    "faults": '{"forged": true}',
    "status": '{"forged": true}',
    "events": '{"forged": true}',
    "components/brake_left": '{"forged": true}',
    "response/inject_fault": '{"forged": true}',
}


@pytest.mark.parametrize("user", ["viewer", "workshop", "homeassistant"])
async def test_nobody_but_the_daemon_writes_its_state(acl_broker: AclBroker, user: str) -> None:
    """A viewer (or workshop, or Home Assistant) can read the faults but not forge them: not the
    retained state, not an event, not a response, not `offline`."""
    service = acl_broker.daemon()
    root = service.publisher.topics.root
    async with running(service), acl_broker.subscribed(user, f"{root}/#") as reader:
        response = await request(
            acl_broker,
            "workshop",
            root,
            "inject_fault",
            {"component": "brake_left", "failure": "open_circuit"},
        )
        assert response["status"] == "ok"
        await reader.wait_for(  # it reads the faults
            lambda: (
                [f["component"] for f in (latest(reader, f"{root}/faults") or {}).get("faults", [])]
                == ["brake_left"]
            ),
            what="the fault, read",
        )
        await wait_until(lambda: service.publisher.backlog == 0)
        for suffix, payload in FORGERIES.items():
            await acl_broker.publish(user, f"{root}/{suffix}", payload, retain=True)
        # Barrier: the control user's message, published after the forgeries, is seen.
        await acl_broker.publish("control", f"{root}/barrier", "1")
        await reader.wait_for(lambda: reader.on(f"{root}/barrier"), what="the barrier")
        assert not [t for t, p, _ in reader.messages if b"forged" in p]
        assert b"offline" not in reader.on(f"{root}/availability")
        # And what the broker keeps is still the daemon's word.
        async with acl_broker.subscribed("viewer", f"{root}/#") as fresh:
            await fresh.wait_for(lambda: fresh.on(f"{root}/availability"), what="retained")
            await fresh.wait_for(lambda: fresh.on(f"{root}/faults"), what="retained faults")
            assert fresh.on(f"{root}/availability") == [b"online"]
            assert latest(fresh, f"{root}/faults")["faults"][0]["component"] == "brake_left"

        # Positive control: the same forgeries by a user allowed to write are seen at once.
        for suffix, payload in FORGERIES.items():
            await acl_broker.publish("control", f"{root}/{suffix}", payload)
        await reader.wait_for(
            # Seen at all (the daemon may say its own word again right after it).
            lambda: all(p.encode() in reader.on(f"{root}/{s}") for s, p in FORGERIES.items()),
            what="the control's forgeries",
        )


async def test_home_assistant_may_clear_faults_but_not_break_parts(acl_broker: AclBroker) -> None:
    service = acl_broker.daemon()
    root = service.publisher.topics.root
    async with running(service), acl_broker.subscribed("homeassistant", f"{root}/#") as sub:
        await sub.wait_for(lambda: latest(sub, f"{root}/components/brake_left"), what="a part")
        await acl_broker.publish(
            "homeassistant",
            f"{root}/request/inject_fault",
            '{"component": "brake_left", "failure": "open_circuit", "transaction": "ha"}',
        )
        # The button's request, sent after, is answered (seen by this subscriber too, after
        # anything the daemon said before it).
        response = await request(acl_broker, "homeassistant", root, "clear_faults", {})
        assert response["status"] == "ok"
        await sub.wait_for(lambda: sub.on(f"{root}/response/clear_faults"), what="the answer")
        cycle = service.daemon.diagnoser.cycle
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycle + 5)
        assert not sub.on(f"{root}/response/inject_fault")
        assert not service.daemon.car.failures()  # the part was never broken
        assert latest(sub, f"{root}/components/brake_left")["status"] == "ok"


async def carlightd(service: Service, user: str, *args: str) -> tuple[int, str, str]:
    """The installed command line, as `user`, against the daemon's broker and vehicle."""
    mqtt = service.settings.mqtt
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARLIGHTD_")}
    env |= {
        "CARLIGHTD_MQTT__HOST": mqtt.host,
        "CARLIGHTD_MQTT__PORT": str(mqtt.port),
        "CARLIGHTD_MQTT__BASE_TOPIC": mqtt.base_topic,
        "CARLIGHTD_VEHICLE__ID": service.settings.vehicle.id,
        "CARLIGHTD_MQTT__USERNAME": user,
        "CARLIGHTD_MQTT__PASSWORD": password_of(user),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carlightd",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_command_line_under_each_role(acl_broker: AclBroker) -> None:
    """What the README tells each person to use: the workshop breaks a part with `carlightd
    inject`; the viewer reads it with `carlightd faults`, and its own `inject` gets no answer."""
    service = acl_broker.daemon()
    async with running(service):
        await wait_until(lambda: service.publisher.connected)
        code, out, err = await carlightd(
            service, "workshop", "inject", "brake_left", "open_circuit"
        )
        assert (code, out) == (
            0,
            'inject_fault: ok {"component": "brake_left", "failure": "open_circuit"}\n',
        ), err
        await wait_until(lambda: bool(service.daemon.diagnoser.memory.records))
        await wait_until(lambda: service.publisher.backlog == 0)
        code, out, err = await carlightd(service, "viewer", "faults", "--json")
        assert code == 0, err
        assert [f["component"] for f in json.loads(out)["faults"]] == ["brake_left"]
        code, out, err = await carlightd(service, "viewer", "inject", "tail_left", "open_circuit")
        assert code == 1
        assert "no response from vehicle" in err
        assert service.daemon.car.failures() == {"brake_left": {"open_circuit"}}


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("viewer", "wrong"), ("nobody", "nobody-secret-7")],
    ids=["anonymous", "wrong password", "unknown user"],
)
async def test_anonymous_and_wrong_credentials_are_refused(
    acl_broker: AclBroker, user: str | None, password: str | None
) -> None:
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed"):
        async with acl_broker.client(user, password):
            pass
    async with acl_broker.client("viewer"):  # while the right password gets in
        pass


def readme_block(after: str) -> str:
    """The first ```text block after `after` in the README."""
    text = README.read_text()
    start = text.index("```text\n", text.index(after)) + len("```text\n")
    return text[start : text.index("```", start)]


def test_the_readme_shows_the_tested_acl() -> None:
    assert readme_block("`/etc/mosquitto/carlightd.acl` is") == ACL.read_text(), (
        "README's Security section must quote docs/mosquitto-acl.conf as it is"
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test CA")
async def test_the_readmes_broker_configuration_with_tls(
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    private_broker: Callable[..., PrivateBroker],
) -> None:
    """The README's mosquitto.conf lines as written (paths and port aside): TLS with client
    certificates, passwords and the ACL in one broker; the daemon and two roles over TLS."""
    lines = readme_block("`/etc/mosquitto/conf.d/carlightd.conf`:").splitlines(keepends=True)
    assert lines[0] == "listener 8883\n"  # the fixture's own listener line takes its place
    conf = "".join(lines[1:])
    acl = tmp_path / "carlightd.acl"
    acl.write_text(readme_block("`/etc/mosquitto/carlightd.acl` is"))
    for written, ours in {
        "/etc/mosquitto/certs/ca.crt": pki.ca,
        "/etc/mosquitto/certs/server.crt": pki.server_cert,
        "/etc/mosquitto/certs/server.key": pki.server_key,
        "/etc/mosquitto/passwd": make_passwords(tmp_path),
        "/etc/mosquitto/carlightd.acl": acl,
    }.items():
        assert written in conf
        conf = conf.replace(written, str(ours))
    tls = AclBroker(private_broker(listener=conf), tmp_path, host="localhost", pki=pki)
    service = tls.daemon()
    root = service.publisher.topics.root
    async with running(service), tls.subscribed("viewer", f"{root}/#") as viewer:
        await viewer.wait_for(lambda: viewer.on(f"{root}/availability")[-1:] == [b"online"])
        await tls.publish(
            "viewer",
            f"{root}/request/inject_fault",
            '{"component": "brake_left", "failure": "open_circuit"}',
        )
        response = await request(
            tls,
            "workshop",
            root,
            "inject_fault",
            {"component": "tail_left", "failure": "open_circuit"},
        )
        assert response["status"] == "ok", response
        await viewer.wait_for(
            lambda: (
                [f["component"] for f in (latest(viewer, f"{root}/faults") or {}).get("faults", [])]
                == ["tail_left"]
            ),
            what="the workshop's fault, read by the viewer",
        )
        assert service.daemon.car.failures() == {"tail_left": {"open_circuit"}}
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed"):
        async with tls.client(None):
            pass
