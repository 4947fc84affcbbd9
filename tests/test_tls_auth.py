"""TLS to the broker and username/password, against a private Mosquitto with a TLS listener and a
password file, using a throwaway CA made by the test. The password never reaches a log line."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from carlightd import cli, config, logs
from carlightd.app.daemon import Service
from tests.brokers import PrivateBroker
from tests.conftest import running, service_settings, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
    reason="needs openssl and mosquitto_passwd to make the CA and the password file",
)
PASSWORD = "correct-horse-battery"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=carlightd test CA",
        # What Python 3.13's strict verification (VERIFY_X509_STRICT) wants of a CA, as a
        # real CA has it: a critical CA flag and key usage.
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )

    def issue(name: str, subject: str, extension: str) -> None:
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        (d / f"{name}.ext").write_text(extension)
        openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(d / f"{name}.ext"),
            "-out",
            str(d / f"{name}.crt"),
        )

    # The server certificate names "localhost" only: connecting to 127.0.0.1 fails the check.
    # Strict verification also wants each certificate to name the key that signed it.
    signed_by = "authorityKeyIdentifier=keyid,issuer\n"
    issue("server", "/CN=localhost", f"subjectAltName=DNS:localhost\n{signed_by}")
    issue("client", "/CN=carlightd", f"extendedKeyUsage=clientAuth\n{signed_by}")
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@pytest.fixture
def tls_broker(
    pki: Pki, tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> PrivateBroker:
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "car", PASSWORD], check=True)
    return private_broker(
        listener=(
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            f"require_certificate true\nallow_anonymous false\npassword_file {passwords}\n"
        )
    )


def tls_settings(
    broker: PrivateBroker, pki: Pki, tmp_path: Path, host: str = "localhost", **mqtt: object
) -> config.Settings:
    tls = {
        "enabled": True,
        "ca_file": pki.ca,
        "cert_file": pki.client_cert,
        "key_file": pki.client_key,
        "check_hostname": True,
    }
    values: dict[str, object] = {
        "mqtt__username": "car",
        "mqtt__password": PASSWORD,
        "mqtt__tls": tls,
        **mqtt,
    }
    return service_settings(host, broker.port, tmp_path / "state", **values)


async def test_tls_with_client_certificate_and_password(
    tls_broker: PrivateBroker, pki: Pki, tmp_path: Path
) -> None:
    service = Service(tls_settings(tls_broker, pki, tmp_path))
    async with running(service):
        await wait_until(lambda: service.publisher.connected and service.publisher.backlog == 0)


# paho leaves the socket of a failed TLS handshake to the garbage collector, which closes it
# (and says so): not a leak of ours, and not a reason to fail.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize(
    ("host", "overrides", "why"),
    [
        ("127.0.0.1", {}, "certificate is issued to localhost, not 127.0.0.1"),
        ("localhost", {"mqtt__password": "wrong-password"}, "password refused"),
    ],
)
async def test_refused_connections_are_retried_and_never_show_the_password(  # noqa: PLR0917
    tls_broker: PrivateBroker,
    pki: Pki,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    host: str,
    overrides: dict[str, object],
    why: str,
) -> None:
    logs.configure(json=True)
    service = Service(tls_settings(tls_broker, pki, tmp_path, host=host, **overrides))
    async with running(service):
        await wait_until(lambda: service.daemon.diagnoser.cycle >= 10)
        assert not service.publisher.connected, why
    # Collected here, where the warning is expected: on Python 3.13 those sockets sit in reference
    # cycles, and a later collection would blame whichever test happened to be running.
    gc.collect()
    err = capfd.readouterr().err
    failures = [json.loads(line) for line in err.splitlines() if "mqtt_connect_failed" in line]
    assert failures, err
    assert PASSWORD not in err
    assert "wrong-password" not in err


async def test_hostname_check_can_be_turned_off(
    tls_broker: PrivateBroker, pki: Pki, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, pki, tmp_path, host="127.0.0.1")
    settings = settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"tls": settings.mqtt.tls.model_copy(update={"check_hostname": False})}
            )
        }
    )
    service = Service(settings)
    async with running(service):
        await wait_until(lambda: service.publisher.connected)


def test_password_file_and_secret_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("CARLIGHTD_MQTT__USERNAME", "car")  # a password needs a user name
    monkeypatch.setenv("CARLIGHTD_MQTT__PASSWORD_FILE", str(secret))
    assert cli.main(["check-config"]) == 0
    assert config.load().mqtt_password() == PASSWORD
    monkeypatch.delenv("CARLIGHTD_MQTT__PASSWORD_FILE")
    monkeypatch.setenv("CARLIGHTD_MQTT__PASSWORD", PASSWORD)
    loaded = config.load()
    assert PASSWORD not in repr(loaded)
    assert PASSWORD not in loaded.model_dump_json()
    assert PASSWORD not in capsys.readouterr().out
