"""What the broker holds for Home Assistant: the discovery last announced, in
`{state_dir}/discovery.json`.

The daemon compares it with its configuration at every start and reload. Only a real change (a
new mode, discovery turned off or on, parts added or removed) is sent as a change; an ordinary
connection or Home Assistant restart restates the current discovery and nothing else. Written
atomically once the broker has acknowledged the change. A record that cannot be read is taken as
unknown (logged): the current discovery is then announced as it is, with no clean-up. One that
cannot be written is logged; the daemon carries on, and the next start repeats the change.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from carlightd import logs
from carlightd.errors import CarlightdError
from carlightd.outputs.mqtt.homeassistant import Mode
from carlightd.store.state import describe_error, printable

log = logs.get("carlightd.homeassistant")

RECORD_FILE = "discovery.json"
MAX_RECORD_BYTES = 64 * 1024  # a few dozen entities take 2 KB; anything far larger is not ours


class Announced(BaseModel):
    """The discovery the broker holds: its mode (`off`: removed), where, and the entities
    (object id -> platform) it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["carlightd.ha-discovery"] = "carlightd.ha-discovery"
    version: Literal[1] = 1
    mode: Mode
    prefix: str
    node: str
    entities: dict[str, str]


def path_of(state_dir: Path) -> Path:
    return state_dir / RECORD_FILE


def load(state_dir: Path) -> Announced | None:
    """The record, or None when there is none or it cannot be used (logged, never raised)."""
    path = path_of(state_dir)
    try:
        return _read(path)
    except _UnusableError as unusable:
        log.warning(
            "discovery_record_unusable",
            path=printable(path),
            problem=str(unusable),
            effect="last discovery mode unknown: the current one is announced, nothing removed",
        )
        return None


class _UnusableError(CarlightdError):
    """Something is at the record's path, but not a record that can be read."""


def _read(path: Path) -> Announced | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _UnusableError(f"cannot be examined: {describe_error(error)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _UnusableError("not a regular file")
    if info.st_size > MAX_RECORD_BYTES:
        raise _UnusableError(f"too large ({info.st_size} bytes)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except OSError as error:
        raise _UnusableError(f"cannot be read: {describe_error(error)}") from None
    try:
        return Announced.model_validate_json(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise _UnusableError(f"not a discovery record ({where}: {first['msg']})") from None


def save(state_dir: Path, record: Announced) -> bool:
    """Write atomically (a temporary file in the same folder, flushed, renamed over). False, and
    a log line, when it cannot be written."""
    path = path_of(state_dir)
    try:
        _write(path, record.model_dump_json(indent=2).encode())
    except OSError as error:
        log.error(
            "discovery_record_not_saved",
            path=printable(path),
            error=describe_error(error),
            effect="the next start sends this discovery change again",
        )
        return False
    return True


def _write(path: Path, data: bytes) -> None:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_FILE}.", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # A failed attempt leaves nothing behind (on a full disk it would keep it full).
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
