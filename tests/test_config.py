"""Configuration: bad values exit 2 naming the field; the environment wins over the file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carlightd import cli, config, schemas
from carlightd.app.daemon import Service
from tests.brokers import subscribed, unique_base_topic
from tests.conftest import running, wait_until
from tests.test_tls_auth import Pki, pki  # noqa: F401 (the throwaway CA fixture)

DEFAULT = tomllib.loads(config.packaged_default().read_text())
KNOWN_KEYS = config.load(config.packaged_default()).model_dump()
FIRST_LAMP = next(i for i, c in enumerate(DEFAULT["components"]) if c["kind"] == "lamp")


def write(tmp_path: Path, raw: dict[str, Any], name: str = "car.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(raw))
    return path


def with_value(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(json.dumps(DEFAULT))
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


finite = st.floats(allow_nan=False, allow_infinity=False)
not_ident = st.text(min_size=1, max_size=10).filter(
    lambda s: not all(c.islower() or c.isdigit() or c in "_-" for c in s) or s[0] in "_-"
)
BAD_VALUES: list[tuple[tuple[str | int, ...], st.SearchStrategy[Any]]] = [
    (("mqtt", "port"), st.integers(max_value=0) | st.integers(min_value=65536, max_value=2**40)),
    (("mqtt", "port"), st.text(min_size=1).filter(lambda s: not s.strip().isdigit())),
    (
        ("mqtt", "keepalive_s"),
        st.integers(max_value=-1) | st.integers(min_value=65536, max_value=9**9),
    ),
    (("mqtt", "base_topic"), st.sampled_from(["", "/lead", "trail/", "a/#", "a/+/b"])),
    (("vehicle", "id"), not_ident),
    (("vehicle", "ignition"), st.text().filter(lambda s: s not in ("off", "on", "run"))),
    (("diagnostics", "cycle_s"), finite.filter(lambda x: x <= 0.0)),
    (("diagnostics", "confirm_cycles"), st.integers(max_value=0)),
    (("diagnostics", "heal_cycles"), st.integers(min_value=1001, max_value=2**31)),
    (
        ("simulation", "noise"),
        finite.filter(lambda x: x > 2.0 or x < 0.0),
    ),
    (("simulation", "seed"), st.integers(max_value=-1)),
    (("vehicle", "vin"), st.sampled_from(["", "CARLGHTD00000000", "CARLGHTD0000000I1", "x" * 17])),
    (("scan_tool", "doip_port"), st.integers(max_value=-1) | st.integers(min_value=65536)),
    (("scan_tool", "elm327_port"), st.text(min_size=1).filter(lambda s: not s.strip().isdigit())),
    (("scan_tool", "logical_address"), st.integers(max_value=0) | st.integers(min_value=0xE00)),
    (("scan_tool", "request_id"), st.integers(min_value=0x800, max_value=2**40)),
    (("scan_tool", "response_id"), st.sampled_from(["0x7G8", "", "seven"])),
    (("scan_tool", "doip"), st.sampled_from(["maybe", 2, [1]])),
    (("components", FIRST_LAMP, "power_w"), finite.filter(lambda x: x < 2.0)),
    (
        ("components", FIRST_LAMP, "technology"),
        st.text().filter(lambda s: s not in ("led", "incandescent")),
    ),
]


# Marked scan_tool: the switches the conftest sets in the environment would hide a bad one here.
@pytest.mark.scan_tool
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=st.sampled_from(BAD_VALUES).flatmap(lambda c: st.tuples(st.just(c[0]), c[1])))
def test_bad_value_exits_2_naming_the_field(
    case: tuple[tuple[str | int, ...], Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, value = case
    config_file = write(tmp_path, with_value(path, value))
    assert cli.main(["check-config", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    dotted = ".".join(str(p) for p in path)
    assert f"  {dotted}: " in err, err


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    section=st.sampled_from(
        ["mqtt", "vehicle", "diagnostics", "simulation", "commands", "homeassistant"]
    ),
    key=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True),
)
def test_unknown_keys_are_named(
    section: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(json.dumps(DEFAULT))
    if key in KNOWN_KEYS[section]:
        return
    raw.setdefault(section, {})[key] = 1
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    assert f"  {section}.{key}: unknown key" in capsys.readouterr().err


def test_every_bad_field_is_listed_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = with_value(("mqtt", "port"), 0)
    raw["diagnostics"]["confirm_cycles"] = 0
    raw["components"].append({"kind": "fridge", "id": "x"})
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "  mqtt.port: " in err
    assert "  diagnostics.confirm_cycles: " in err
    assert f"  components.{len(raw['components']) - 1}: " in err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw["components"].append(dict(raw["components"][-1])),
            f"repeated: {DEFAULT['components'][-1]['id']}",
        ),
        (lambda raw: raw["components"].pop(1), "exactly one battery"),
        (
            lambda raw: raw["components"][FIRST_LAMP].update(controller="nobody"),
            "names controller 'nobody'",
        ),
        (
            lambda raw: raw["diagnostics"].update(read_timeout_s=5.0),
            "read_timeout_s must be shorter than cycle_s (read_timeout_s 5 >= cycle_s 1)",
        ),
        (lambda raw: raw["mqtt"].update(password="hunter2"), "mqtt.password: must not be written"),
    ],
)
def test_whole_car_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, message: str
) -> None:
    raw = json.loads(json.dumps(DEFAULT))
    mutate(raw)
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "hunter2" not in err


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = with_value(("mqtt", "port"), 1883)
    raw["mqtt"]["host"] = "broker.example"
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", "1884")
    monkeypatch.setenv("CARLIGHTD_DIAGNOSTICS__CONFIRM_CYCLES", "7")
    monkeypatch.setenv("CARLIGHTD_VEHICLE__ID", "car-42")
    loaded = config.load(write(tmp_path, raw))
    assert loaded.mqtt.port == 1884
    assert loaded.mqtt.host == "broker.example"  # untouched keys keep the file's value
    assert loaded.diagnostics.confirm_cycles == 7
    assert loaded.vehicle.id == "car-42"


def test_scan_tool_can_ids_from_the_environment_in_hex(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARLIGHTD_SCAN_TOOL__REQUEST_ID", "0x7E1")
    monkeypatch.setenv("CARLIGHTD_SCAN_TOOL__LOGICAL_ADDRESS", "0x0741")
    loaded = config.load(write(tmp_path, DEFAULT))
    assert (loaded.scan_tool.request_id, loaded.scan_tool.logical_address) == (0x7E1, 0x741)
    # The ECU would read its own answers: refused, naming both.
    monkeypatch.setenv("CARLIGHTD_SCAN_TOOL__RESPONSE_ID", "0x7e1")
    assert cli.main(["check-config", "--config", str(write(tmp_path, DEFAULT))]) == 2
    assert "request_id and response_id must differ (both 0x7e1)" in capsys.readouterr().err


def test_bad_environment_value_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARLIGHTD_MQTT__PORT", "not-a-port")
    assert cli.main(["check-config"]) == 2
    assert "  mqtt.port: " in capsys.readouterr().err


def test_password_only_from_environment_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARLIGHTD_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("CARLIGHTD_MQTT__USERNAME", "car")
    loaded = config.load(write(tmp_path, DEFAULT))
    assert loaded.mqtt_password() == "s3cret"
    assert "s3cret" not in repr(loaded)
    assert "s3cret" not in str(loaded.model_dump())
    monkeypatch.delenv("CARLIGHTD_MQTT__PASSWORD")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    raw = with_value(("mqtt", "password_file"), str(secret))
    assert config.load(write(tmp_path, raw)).mqtt_password() == "from-file"


def test_config_path_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CARLIGHTD_CONFIG", raising=False)
    assert cli.main(["check-config"]) == 0
    assert f"{len(DEFAULT['components'])} components" in capsys.readouterr().out
    other = write(tmp_path, with_value(("vehicle", "id"), "from-env-path"))
    monkeypatch.setenv("CARLIGHTD_CONFIG", str(other))
    assert config.load().vehicle.id == "from-env-path"
    # An explicit path that does not exist is an error, never a silent default.
    assert cli.main(["check-config", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("[mqtt\nport = ")
    assert cli.main(["check-config", "--config", str(tmp_path / "broken.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_the_packaged_default_describes_the_documented_car() -> None:
    loaded = config.load(config.packaged_default())
    assert [c.id for c in loaded.components] == [
        "bcm",
        "battery",
        "alternator",
        "headlamp_left",
        "headlamp_right",
        "high_beam_left",
        "high_beam_right",
        "tail_left",
        "tail_right",
        "brake_left",
        "brake_right",
        "brake_center",
        "turn_front_left",
        "turn_front_right",
        "turn_rear_left",
        "turn_rear_right",
        "reverse",
        "license_plate",
        "fuse_front_left",
        "fuse_front_right",
        "fuse_rear",
        "ground_front",
        "ground_rear",
    ]
    # The v1 car's 18 parts keep their ids; every lamp has one fuse and one ground point.
    lamps = {c.id for c in loaded.components if c.kind == "lamp"}
    for kind, field in (("fuse", "feeds"), ("ground", "serves")):
        named = [lamp for c in loaded.components if c.kind == kind for lamp in getattr(c, field)]
        assert sorted(named) == sorted(lamps), kind
    repo_copy = Path(__file__).parents[1] / "config" / "carlightd.toml"
    assert repo_copy.read_text() == config.packaged_default().read_text()


def test_schema_prints_the_configuration_and_every_payload(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["config"]["properties"]) == {
        "mqtt",
        "vehicle",
        "diagnostics",
        "simulation",
        "commands",
        "homeassistant",
        "scan_tool",
        "components",
    }
    assert "discriminator" in json.dumps(printed["config"])
    assert set(printed["faults"]["properties"]) == {
        "vehicle",
        "updated_at",
        "warning_lamps",
        "faults",
    }
    assert {"event", "component", "telemetry", "request-inject_fault"} <= set(printed)


def test_schemas_in_docs_are_up_to_date() -> None:
    """docs/schemas/ is generated from the models: `carlightd schema --write docs/schemas`."""
    directory = Path(__file__).parents[1] / "docs" / "schemas"
    for name, schema in schemas.all_schemas().items():
        path = directory / f"{name}.schema.json"
        assert path.exists(), f"{path} missing: run `carlightd schema --write docs/schemas`"
        assert path.read_text() == schemas.render(schema), (
            f"{path} is out of date: run `carlightd schema --write docs/schemas`"
        )
    stale = {p.name for p in directory.glob("*.schema.json")} - {
        f"{name}.schema.json" for name in schemas.all_schemas()
    }
    assert not stale, f"schemas for models that no longer exist: {stale}"


# --- configuration that cannot work is refused at load time (exit 2), never a restart loop -------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dangling(path: Path) -> None:
    path.symlink_to(path.with_name("gone"))


PASSWORD_FILE_PROBLEMS: list[tuple[str, Callable[[Path], object], str]] = [
    ("missing", lambda path: None, "no such file"),
    ("directory", lambda path: path.mkdir(), "is a directory"),
    ("dangling symlink", _dangling, "symbolic link to a missing file"),
    ("empty", lambda path: path.write_text(" \n\t\n"), "is empty"),
    ("not UTF-8", lambda path: path.write_bytes(b"p\xe4ssword\n"), "is not UTF-8 text"),
    ("a pipe", _fifo, "is not a regular file"),  # reading it would block the start
    ("too long", lambda path: path.write_text("x" * 65_536), "more than MQTT allows"),
]


@pytest.mark.parametrize(
    ("make", "problem"),
    [pytest.param(make, problem, id=name) for name, make, problem in PASSWORD_FILE_PROBLEMS],
)
@pytest.mark.parametrize("via", ["file", "environment"])
def test_unusable_password_file_exits_2_naming_it(  # noqa: PLR0917
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    problem: str,
    via: str,
) -> None:
    secret = tmp_path / "mqtt-password"
    make(secret)
    raw = with_value(("mqtt", "username"), "car")
    if via == "file":
        raw["mqtt"]["password_file"] = str(secret)
    else:
        monkeypatch.setenv("CARLIGHTD_MQTT__PASSWORD_FILE", str(secret))
    config_file = write(tmp_path, raw)
    # check-config, and every other command, since they all load the configuration first.
    for command in (["check-config"], ["faults"], ["health"]):
        assert cli.main([*command, "--config", str(config_file)]) == 2
        err = capsys.readouterr().err
        assert f"  mqtt.password_file: {secret}" in err, err
        assert problem in err, err


def test_password_file_without_read_permission() -> None:
    """As a process; root reads any file whatever its mode, so as root it runs without the
    capabilities that let it (still root, so it can run an interpreter kept under /root, as
    pyenv's are: `nobody` could not load Python 3.13's libpython from there)."""
    directory = Path(tempfile.mkdtemp(prefix="carlightd-perm-"))  # not under root's 0700 tmp
    try:
        directory.chmod(0o755)
        secret = directory / "mqtt-password"
        secret.write_text("s3cret\n")
        secret.chmod(0)
        raw = with_value(("mqtt", "username"), "car")
        raw["mqtt"]["password_file"] = str(secret)
        config_file = write(directory, raw)
        config_file.chmod(0o644)
        unprivileged = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
        if os.geteuid() == 0 and shutil.which("setpriv") is None:
            pytest.skip("as root this needs setpriv (util-linux) to drop privileges")
        result = subprocess.run(
            [
                *(unprivileged if os.geteuid() == 0 else []),
                sys.executable,
                "-m",
                "carlightd",
                "check-config",
                "--config",
                str(config_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("CARLIGHTD_")},
        )
    finally:
        shutil.rmtree(directory)
    assert result.returncode == 2, result.stderr
    assert f"  mqtt.password_file: {secret} is not readable (permission denied)" in result.stderr
    assert "s3cret" not in result.stderr


def test_password_file_is_read_once_at_load(tmp_path: Path) -> None:
    """What check-config accepted is what the daemon sends: a secret file unmounted later does not
    crash a reconnect; a reload that reads a new password counts as an MQTT change."""
    secret = tmp_path / "mqtt-password"
    secret.write_text("  first\n")
    raw = with_value(("mqtt", "username"), "car")
    raw["mqtt"]["password_file"] = str(secret)
    config_file = write(tmp_path, raw)
    loaded = config.load(config_file)
    secret.write_text("second\n")
    reloaded = config.load(config_file)
    secret.unlink()
    assert loaded.mqtt_password() == "first"
    assert reloaded.mqtt_password() == "second"
    assert loaded.mqtt != reloaded.mqtt
    assert "first" not in repr(loaded) + loaded.model_dump_json()


def test_a_password_needs_a_username(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # MQTT 3.1.1 sends a password only with a user name: without one it would be dropped silently.
    monkeypatch.setenv("CARLIGHTD_MQTT__PASSWORD", "s3cret")
    assert cli.main(["check-config", "--config", str(write(tmp_path, DEFAULT))]) == 2
    err = capsys.readouterr().err
    assert "  mqtt: a password is set but mqtt.username is not" in err
    assert "s3cret" not in err


def test_run_with_an_unusable_password_file_exits_2_before_touching_the_broker(
    tmp_path: Path,
) -> None:
    """`carlightd run` as a process: exit 2 (systemd does not restart it), nothing connects."""
    with socket.socket() as fake_broker:
        fake_broker.bind(("127.0.0.1", 0))
        fake_broker.listen()
        fake_broker.setblocking(False)
        raw = with_value(("mqtt", "port"), fake_broker.getsockname()[1])
        raw["mqtt"]["username"] = "car"
        raw["mqtt"]["password_file"] = str(tmp_path / "no-such-password")
        raw["diagnostics"]["state_dir"] = str(tmp_path / "state")
        result = subprocess.run(
            [sys.executable, "-m", "carlightd", "run", "--config", str(write(tmp_path, raw))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("CARLIGHTD_")},
        )
        assert result.returncode == 2, result.stderr
        assert f"mqtt.password_file: {tmp_path / 'no-such-password'}: no such file" in (
            result.stderr
        )
        with pytest.raises(BlockingIOError):
            fake_broker.accept()  # nobody knocked
    assert not (tmp_path / "state").exists()


def test_read_timeout_follows_the_cycle_when_not_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(json.dumps(DEFAULT))
    raw["diagnostics"].pop("read_timeout_s", None)
    assert config.load(write(tmp_path, raw)).diagnostics.read_timeout_s == 0.25  # the default car
    raw["diagnostics"]["cycle_s"] = 0.05
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 0
    assert config.load(write(tmp_path, raw)).diagnostics.read_timeout_s == 0.0125
    raw["diagnostics"]["cycle_s"] = 60.0
    assert config.load(write(tmp_path, raw)).diagnostics.read_timeout_s == 0.25
    # Given explicitly, it must still fit in the cycle, and the message names both fields.
    raw["diagnostics"].update(cycle_s=0.05, read_timeout_s=0.05)
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    assert (
        "  diagnostics: read_timeout_s must be shorter than cycle_s "
        "(read_timeout_s 0.05 >= cycle_s 0.05)" in capsys.readouterr().err
    )


def test_only_cycle_s_from_the_environment_works_with_the_packaged_car(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CARLIGHTD_CONFIG", raising=False)
    monkeypatch.setenv("CARLIGHTD_DIAGNOSTICS__CYCLE_S", "0.05")
    assert cli.main(["check-config"]) == 0, capsys.readouterr().err
    assert config.load().diagnostics.read_timeout_s == 0.0125


async def test_only_cycle_s_set_runs(tmp_path: Path, broker: tuple[str, int]) -> None:
    raw = json.loads(json.dumps(DEFAULT))
    raw["mqtt"].update(host=broker[0], port=broker[1], base_topic=unique_base_topic())
    raw["diagnostics"] = {"cycle_s": 0.05, "state_dir": str(tmp_path / "state")}
    service = Service(config.load(write(tmp_path, raw)))
    async with running(service):
        await wait_until(
            lambda: service.publisher.connected and service.daemon.diagnoser.cycle >= 40
        )
    assert service.daemon.runner.read_timeout_s == 0.0125


@pytest.mark.parametrize("keepalive_s", [0, 65_535])
async def test_keepalive_takes_what_mqtt_allows(
    tmp_path: Path, broker: tuple[str, int], keepalive_s: int
) -> None:
    """0 (off) and the 16-bit maximum: accepted here, and by the broker."""
    raw = with_value(("mqtt", "keepalive_s"), keepalive_s)
    raw["mqtt"].update(host=broker[0], port=broker[1], base_topic=unique_base_topic())
    raw["diagnostics"].update(state_dir=str(tmp_path / "state"), cycle_s=0.1)
    service = Service(config.load(write(tmp_path, raw)))
    availability = f"{service.publisher.topics.root}/availability"
    async with subscribed(*broker, availability) as sub, running(service):
        await sub.wait_for(lambda: sub.on(availability)[-1:] == [b"online"], what="online")
        await wait_until(lambda: service.publisher.backlog == 0)
        assert service.publisher.connected
        assert service.publisher.connections == 1  # connected once, never refused or dropped


def _tls_case(ca: Pki, tmp_path: Path, case: str) -> dict[str, Any]:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    encrypt = ["openssl", "pkey", "-in", str(ca.client_key), "-aes256", "-passout", "pass:x"]
    subprocess.run(
        [*encrypt, "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    good = {"ca_file": ca.ca, "cert_file": ca.client_cert, "key_file": ca.client_key}
    cases: dict[str, dict[str, Any]] = {
        "good": good,
        "missing ca_file": {**good, "ca_file": tmp_path / "no-ca.crt"},
        "ca_file a directory": {**good, "ca_file": tmp_path},
        "ca_file not a certificate": {**good, "ca_file": garbage},
        "key without certificate": {"ca_file": ca.ca, "key_file": ca.client_key},
        "key of another certificate": {**good, "key_file": ca.server_key},
        "encrypted key": {**good, "key_file": encrypted},
    }
    return {"enabled": True, **{k: str(v) for k, v in cases[case].items()}}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test CA")
@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing ca_file", "  mqtt.tls: ca_file: {tmp}/no-ca.crt: no such file"),
        ("ca_file a directory", "  mqtt.tls: ca_file: {tmp} is a directory"),
        ("ca_file not a certificate", "  mqtt.tls: ca_file: {tmp}/garbage.pem holds no usable"),
        ("key without certificate", "  mqtt.tls: key_file is set but cert_file is not"),
        ("key of another certificate", "  mqtt.tls: cert_file/key_file cannot be used together"),
        ("encrypted key", "  mqtt.tls: key_file: the private key is encrypted"),
    ],
)
def test_unusable_tls_files_exit_2(
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    problem: str,
) -> None:
    """Loaded as the connection loads them: exit 2 now, not a crash at the first connect."""
    raw = with_value(("mqtt", "tls"), _tls_case(pki, tmp_path, case))
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    assert problem.format(tmp=tmp_path) in capsys.readouterr().err
    raw["mqtt"]["tls"]["enabled"] = False  # files that are not used are not checked
    assert cli.main(["check-config", "--config", str(write(tmp_path, raw))]) == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test CA")
def test_usable_tls_files_pass(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    raw = with_value(("mqtt", "tls"), _tls_case(pki, tmp_path, "good"))
    assert config.load(write(tmp_path, raw)).mqtt.tls.cert_file == pki.client_cert
