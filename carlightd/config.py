"""The configuration: one typed, validated, frozen object built at start-up (DESIGN §6).

Sources, strongest first: environment variables `CARLIGHTD_SECTION__KEY`, then the TOML file.
The MQTT password may come only from the environment or from `mqtt.password_file`; a password
written into the TOML file is refused, so it never ends up in a repository.
"""

from __future__ import annotations

import functools
import operator
import os
import ssl
import stat
import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from carlightd.core.domain import Ignition
from carlightd.core.kinds import KINDS, check_car
from carlightd.core.kinds.spec import Identifier, PartConfig
from carlightd.errors import CarlightdError

ENV_PREFIX = "CARLIGHTD_"
CONFIG_PATH_ENV = "CARLIGHTD_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The longest password an MQTT CONNECT packet can carry (a two-byte length).
MQTT_MAX_PASSWORD_BYTES = 65_535


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path`; ValueError names the path and what is wrong with it.

    Only a regular file: a pipe would block the start-up, and a device is never a secret.
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"{path} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file")
        with path.open("rb") as file:
            return file.read(limit)
    except FileNotFoundError:
        dangling = path.is_symlink()
        raise ValueError(
            f"{path} is a symbolic link to a missing file" if dangling else f"{path}: no such file"
        ) from None
    except PermissionError:
        raise ValueError(f"{path} is not readable (permission denied)") from None
    except OSError as error:
        raise ValueError(f"{path} cannot be read: {error.strerror or error}") from None


def read_password_file(path: Path) -> str:
    """The password in `path`, stripped of surrounding whitespace; ValueError says what is wrong."""
    data = read_regular_file(path, MQTT_MAX_PASSWORD_BYTES + 1)
    try:
        password = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not password:
        raise ValueError(f"{path} is empty")
    if len(password.encode()) > MQTT_MAX_PASSWORD_BYTES:
        raise ValueError(f"{path} holds more than MQTT allows ({MQTT_MAX_PASSWORD_BYTES} bytes)")
    return password


class _PassphraseNeededError(CarlightdError):
    pass


def _no_passphrase() -> str:
    raise _PassphraseNeededError


class TLSConfig(_Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _files_usable(self) -> TLSConfig:
        """The files are loaded as the connection will load them, so that a missing CA or a key
        that does not match its certificate is exit 2 now, not a crash at the first connect."""
        if not self.enabled:
            return self
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None:
                try:
                    read_regular_file(path, 1)
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not; the key goes with a cert")
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except ssl.SSLError as error:
            raise ValueError(
                f"ca_file: {self.ca_file} holds no usable certificate: {error}"
            ) from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=_no_passphrase)
            except _PassphraseNeededError:
                # Nothing could type the passphrase at every reconnect.
                raise ValueError(
                    "key_file: the private key is encrypted; give an unencrypted key"
                ) from None
            except ssl.SSLError as error:
                raise ValueError(f"cert_file/key_file cannot be used together: {error}") from None
        return self


class MQTTConfig(_Section):
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    base_topic: str = Field(default="carlightd", min_length=1, pattern=r"^[^#+\x00]+$")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # What MQTT's two-byte field allows; 0 turns keepalive off.
    keepalive_s: int = Field(default=30, ge=0, le=65535)
    tls: TLSConfig = TLSConfig()
    # The password read from `password_file` when the configuration was loaded: what
    # check-config accepted is what the daemon sends, even if the file goes away later.
    _password_from_file: SecretStr | None = PrivateAttr(default=None)

    @field_validator("base_topic")
    @classmethod
    def _no_slash_at_ends(cls, value: str) -> str:
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with '/'")
        return value

    @field_validator("password_file")
    @classmethod
    def _password_file_readable(cls, value: Path | None) -> Path | None:
        # Checked here so that the problem is reported as mqtt.password_file.
        if value is not None:
            read_password_file(value)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> MQTTConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either a password (from the environment) or password_file")
        if self.password_file is not None:
            self._password_from_file = SecretStr(read_password_file(self.password_file))
        if self.secret() is not None and self.username is None:
            # MQTT 3.1.1 carries a password only with a user name; the client would drop it.
            raise ValueError("a password is set but mqtt.username is not; set both or neither")
        return self

    def secret(self) -> str | None:
        """The broker password from the environment or the password file, never from the TOML."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self._password_from_file is not None:
            return self._password_from_file.get_secret_value()
        return None


# ISO 3779: 17 characters, digits and capitals without I, O and Q (they read as 1 and 0).
VIN_PATTERN = r"^[A-HJ-NPR-Z0-9]{17}$"


class VehicleConfig(_Section):
    id: Identifier = "demo-car"
    # What a scan tool reads (UDS 0xF190, OBD-II mode 09 PID 02). The default neither starts nor
    # ends with 0, 1 or 2: python-OBD 0.7 strips those from both ends of a VIN it reads.
    vin: str = Field(default="CLDSMLT12V0000043", pattern=VIN_PATTERN)
    ignition: Ignition = Ignition.RUN


READ_TIMEOUT_MAX_DEFAULT_S = 0.25


def default_read_timeout(cycle_s: float) -> float:
    """A quarter of the cycle, at most 0.25 s: the default car (1 s) keeps 0.25 s, and a faster
    cycle needs no second setting. The rest of the cycle is for judging and publishing."""
    return min(READ_TIMEOUT_MAX_DEFAULT_S, cycle_s / 4)


class DiagnosticsConfig(_Section):
    cycle_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    # Declared after cycle_s: the factory sees it (1.0 if cycle_s itself was invalid).
    read_timeout_s: float = Field(
        default_factory=lambda data: default_read_timeout(data.get("cycle_s", 1.0)),
        gt=0.0,
        le=60.0,
        description="default: cycle_s / 4, at most 0.25",
    )
    confirm_cycles: int = Field(default=3, ge=1, le=1000)
    heal_cycles: int = Field(default=3, ge=1, le=1000)
    # Operation cycles (key off -> on) without failing before a healed DTC leaves the memory.
    aging_cycles: int = Field(default=40, ge=1, le=10000)
    telemetry_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    state_dir: Path = Path("state")

    @model_validator(mode="after")
    def _timeout_fits_in_cycle(self) -> DiagnosticsConfig:
        if self.read_timeout_s >= self.cycle_s:
            raise ValueError(
                f"read_timeout_s must be shorter than cycle_s (read_timeout_s "
                f"{self.read_timeout_s:g} >= cycle_s {self.cycle_s:g}); leave read_timeout_s out "
                "to follow cycle_s"
            )
        return self


class SimulationConfig(_Section):
    seed: int = Field(default=1, ge=0)
    # Multiplies every sensor's noise; 0 gives exact readings. Above 2 the self-tests' margins
    # (about five standard deviations at 1) would start raising false faults on a healthy car.
    noise: float = Field(default=1.0, ge=0.0, le=2.0)
    profile: Literal["drive", "steady"] = "drive"


class CommandsConfig(_Section):
    enabled: bool = True


class HomeAssistantConfig(_Section):
    discovery: bool = True
    prefix: str = Field(default="homeassistant", min_length=1, pattern=r"^[^#+\x00]+$")
    # "device": one message per vehicle (Home Assistant 2024.11 and newer);
    # "entity": one message per entity, for older installations.
    mode: Literal["device", "entity"] = "device"


def _int_any_base(value: Any) -> Any:
    """`0x7E0` from the environment is a number as it is in TOML."""
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            return value  # pydantic names the field and the problem
    return value


TCPPort = Annotated[int, Field(ge=0, le=65535, description="0: any free port (it is logged)")]
CanId = Annotated[
    int, BeforeValidator(_int_any_base), Field(ge=0, le=0x7FF, description="an 11-bit CAN id")
]


class ScanToolConfig(_Section):
    """The scan-tool face (DESIGN §7): UDS over DoIP and ISO-TP, OBD-II through an ELM327."""

    doip: bool = True
    doip_host: str = Field(default="127.0.0.1", min_length=1)
    doip_port: TCPPort = 13400
    # The ECU's DoIP logical address; 0x0001-0x0DFF are the vehicle's own (ISO 13400-2 table 13).
    logical_address: Annotated[int, BeforeValidator(_int_any_base)] = Field(
        default=0x0740, ge=0x0001, le=0x0DFF
    )
    elm327: bool = True
    elm327_host: str = Field(default="127.0.0.1", min_length=1)
    elm327_port: TCPPort = 35000
    elm327_pty: bool = False
    isotp: bool = False
    can_interface: str = Field(default="udp_multicast", min_length=1)
    can_channel: str = Field(default="239.74.163.2", min_length=1)
    request_id: CanId = 0x7E0
    response_id: CanId = 0x7E8

    @model_validator(mode="after")
    def _distinct_can_ids(self) -> ScanToolConfig:
        if self.request_id == self.response_id:
            raise ValueError(
                f"request_id and response_id must differ (both {self.request_id:#05x}): "
                "the ECU would read its own answers"
            )
        return self


def _component_union() -> Any:
    """Every kind's configuration model, told apart by `kind`, in the registry's order."""
    return Annotated[
        functools.reduce(operator.or_, (spec.config_model for spec in KINDS.values())),
        Field(discriminator="kind"),
    ]


if TYPE_CHECKING:
    # Type checkers see the common base; pydantic validates against the tagged union.
    ComponentConfig = PartConfig
else:
    ComponentConfig = _component_union()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mqtt: MQTTConfig = MQTTConfig()
    vehicle: VehicleConfig = VehicleConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    simulation: SimulationConfig = SimulationConfig()
    commands: CommandsConfig = CommandsConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    scan_tool: ScanToolConfig = ScanToolConfig()
    components: list[ComponentConfig] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init arguments; the environment must win over them.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _one_coherent_car(self) -> Settings:
        check_car(self.components)
        return self

    def mqtt_password(self) -> str | None:
        """The broker password from the environment or the password file, never from the TOML."""
        return self.mqtt.secret()


class ConfigError(CarlightdError):
    """The configuration cannot be used; `problems` lists (dotted field path, what is wrong)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def packaged_default() -> Path:
    """The default car that ships inside the package (also at config/carlightd.toml)."""
    with resources.as_file(resources.files("carlightd") / "data" / "carlightd.toml") as path:
        return Path(path)


def resolve_path(explicit: Path | None) -> Path:
    """--config, then $CARLIGHTD_CONFIG, then the packaged default."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_PATH_ENV)
    if from_env:
        return Path(from_env)
    return packaged_default()


def load(explicit: Path | None = None) -> Settings:
    """Read, merge and validate the configuration, or raise ConfigError naming every bad field."""
    path = resolve_path(explicit)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, [("(file)", "no such file")]) from None
    except OSError as error:
        raise ConfigError(source, [("(file)", error.strerror or str(error))]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [("(file)", "not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [("(file)", f"not valid TOML: {error}")]) from None
    return from_mapping(raw, source)


def from_mapping(raw: dict[str, Any], source: str = "(mapping)") -> Settings:
    mqtt = raw.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        raise ConfigError(
            source,
            [
                (
                    "mqtt.password",
                    "must not be written in the config file; set CARLIGHTD_MQTT__PASSWORD "
                    "or mqtt.password_file",
                )
            ],
        )
    try:
        return Settings(**raw)
    except ValidationError as error:
        raise ConfigError(source, describe(error)) from None


def describe(error: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's errors as (dotted path, message), with list indexes kept: components.3.power_w."""
    problems = []
    for item in error.errors(include_url=False):
        # Discriminated unions add the tag to the path (components.3.lamp.power_w); drop it.
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 3 and loc[0] == "components" and loc[2] in _KIND_TAGS:
            del loc[2]
        path = ".".join(loc) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "value_error":
            message = str(item.get("ctx", {}).get("error", message))
        problems.append((path, message))
    return problems


_KIND_TAGS = {str(kind) for kind in KINDS}
