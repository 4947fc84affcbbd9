"""Disk trouble on a real small disk (a 64 KiB tmpfs, mounted for the test): full mid-run, made
read-only mid-run or before the start, the state file deleted, the state path a directory; and a
second daemon on the same state directory.

Whatever happens, the daemon keeps cycling and publishing, says what is wrong (a log line, the
systemd STATUS=, `carlightd health`, the retained ROOT/status) and never hands out an event `seq`
twice. Skipped only where this process may not mount a file system.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carlightd import cli, logs
from carlightd.app import health
from carlightd.app.daemon import Service, build
from carlightd.app.systemd import Notifier
from carlightd.config import Settings
from carlightd.store import statelock
from carlightd.store.state import STATE_FILE
from carlightd.store.statelock import StateDirectoryInUseError
from tests.brokers import Subscriber, subscribed
from tests.conftest import running, service_settings, wait_until
from tests.test_cycle import Recorder
from tests.test_outbox import break_and_mend
from tests.test_reload_health import write_config
from tests.test_systemd import NotifySocket

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1
MS_REMOUNT = 32
MNT_DETACH = 2
SIZE = b"size=64k"


class SmallDisk:
    """A 64 KiB tmpfs of our own: filled, freed, made read-only and writable again at will."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def mount(self) -> None:
        self.path.mkdir()
        if _libc.mount(b"tmpfs", bytes(self.path), b"tmpfs", 0, SIZE) != 0:
            code = ctypes.get_errno()
            if code in (errno.EPERM, errno.EACCES):
                pytest.skip(f"mounting a tmpfs is not permitted here ({os.strerror(code)})")
            raise OSError(code, f"mount tmpfs on {self.path}: {os.strerror(code)}")

    def remount(self, *, read_only: bool) -> None:
        flags = MS_REMOUNT | (MS_RDONLY if read_only else 0)
        if _libc.mount(b"tmpfs", bytes(self.path), b"tmpfs", flags, SIZE) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"remount {self.path}: {os.strerror(code)}")

    def unmount(self) -> None:
        _libc.umount2(bytes(self.path), MNT_DETACH)

    def fill(self) -> int:
        """Take every free byte; returns how many."""
        written = 0
        with self.filler.open("ab", buffering=0) as filler:
            while True:
                try:
                    written += filler.write(b"\0" * 1024)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
        assert os.statvfs(self.path).f_bavail == 0
        return written

    def free(self) -> None:
        self.filler.unlink()

    def temporary_files(self, state_dir: Path | None = None) -> list[str]:
        directory = state_dir or self.path
        return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{STATE_FILE}."))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    disk.mount()
    try:
        yield disk
    finally:
        disk.unmount()


class Logs:
    """The daemon's JSON log lines, as they are written to stderr."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        logs.configure(json=True)
        self.capfd = capfd
        self.lines: list[dict[str, Any]] = []

    def read(self) -> str:
        """Everything written to stderr since the last read; the log lines are kept."""
        err = self.capfd.readouterr().err
        for line in err.splitlines():
            if line.startswith("{"):
                self.lines.append(json.loads(line))
        return err

    def events(self, name: str) -> list[dict[str, Any]]:
        self.read()
        return [line for line in self.lines if line["event"] == name]


@pytest.fixture(autouse=True)
def _log_stream_left_open() -> Iterator[None]:
    yield
    # `Logs` points the log handler at this test's captured stderr, which is closed after it:
    # later tests' lines go to the process's stderr instead (pytest captures that too).
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # ours; not pytest's own capture handlers
            handler.stream = sys.__stderr__  # not setStream: it would flush the closed one


def beat(disk: SmallDisk) -> health.Heartbeat:
    return health.read(disk.path / health.HEARTBEAT_FILE)


def seqs(sub: Subscriber, root: str) -> list[int]:
    return [event["seq"] for event in sub.json_on(f"{root}/events")]


def last_status(sub: Subscriber, root: str) -> dict[str, Any]:
    statuses = sub.json_on(f"{root}/status")
    return statuses[-1] if statuses else {}


def strictly_rising(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


@asynccontextmanager
async def watched(settings: Settings) -> AsyncIterator[Subscriber]:
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    async with subscribed(settings.mqtt.host, settings.mqtt.port, f"{root}/#") as sub:
        yield sub


async def test_a_full_disk_is_said_everywhere_and_the_event_stream_stays_true(
    broker: tuple[str, int],
    small_disk: SmallDisk,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = Logs(capfd)
    notify = NotifySocket(str(tmp_path / "notify.sock"), str(tmp_path / "notify.sock"))
    settings = service_settings(*broker, small_disk.path)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    service = Service(settings, notifier=Notifier({"NOTIFY_SOCKET": notify.address}))
    store, diagnoser = service.daemon.runner.store, service.daemon.diagnoser
    monkeypatch.setenv("CARLIGHTD_DIAGNOSTICS__STATE_DIR", str(small_disk.path))
    state_file = small_disk.path / STATE_FILE
    problem = f"cannot save {state_file}: [Errno 28] No space left on device"
    async with watched(settings) as sub, running(service):
        await wait_until(lambda: service.publisher.connected)
        await break_and_mend(service, ["brake_left"])  # three events, saved
        assert json.loads(state_file.read_text())["seq"] == 3
        await wait_until((small_disk.path / health.HEARTBEAT_FILE).exists)

        filled = small_disk.fill()
        await break_and_mend(service, ["reverse", "tail_right"])  # six more, on a full disk
        assert diagnoser.memory.seq == 9
        assert store.problem == problem
        assert store.last_saved_seq == 3
        assert json.loads(state_file.read_text())["seq"] == 3  # the old file is intact
        # Published all the same, in order, once each.
        await sub.wait_for(lambda: seqs(sub, root)[-1:] == [9], what="event 9")
        # Said: STATUS=, the heartbeat (overwritten in place, so it still works), health, MQTT.
        assert any(f"STATE NOT SAVED: {problem}" in m for m in notify.drain())
        await wait_until(lambda: beat(small_disk).state_problem is not None)
        assert cli.main(["health"]) == 1
        assert f"carlightd: unhealthy: state not saved: {problem}" in log.read()
        await sub.wait_for(
            lambda: last_status(sub, root).get("problems") == [problem], what="ROOT/status"
        )
        assert last_status(sub, root)["state_saved"] is False
        # Still diagnosing, retrying, and nothing left behind by the failed attempts.
        cycle = diagnoser.cycle
        await wait_until(lambda: diagnoser.cycle >= cycle + 15)
        assert small_disk.temporary_files() == []
        assert len(log.events("state_save_failed")) == 1  # once, not once per attempt

        small_disk.free()
        await wait_until(lambda: store.problem is None)  # no new event needed: the retry saves
        assert store.last_saved_seq == 9
        assert json.loads(state_file.read_text())["seq"] == 9
        await sub.wait_for(lambda: last_status(sub, root).get("state_saved"), what="recovery")
        await wait_until(lambda: beat(small_disk).state_problem is None)
        assert health.check(small_disk.path).startswith("healthy")
        assert "STATE NOT SAVED" not in notify.drain()[-1]
    assert [line["problem"] for line in log.events("state_save_failed")] == [problem]
    assert len(log.events("state_save_recovered")) == 1
    assert seqs(sub, root) == list(range(1, 10))
    print(f"full disk: {filled} bytes of filler; 6 events published while unsaved, 0 reused")
    notify.sock.close()


async def test_a_disk_made_read_only_mid_run(
    broker: tuple[str, int], small_disk: SmallDisk, capfd: pytest.CaptureFixture[str]
) -> None:
    log = Logs(capfd)
    settings = service_settings(*broker, small_disk.path)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    service = Service(settings)
    store = service.daemon.runner.store
    heartbeat = small_disk.path / health.HEARTBEAT_FILE
    async with watched(settings) as sub, running(service):
        await wait_until(lambda: service.publisher.connected and heartbeat.exists())
        await break_and_mend(service, ["brake_right"])
        # The daemon holds no file open for writing: the remount is not refused as busy.
        small_disk.remount(read_only=True)
        await break_and_mend(service, ["license_plate"])
        problem = f"cannot save {small_disk.path / STATE_FILE}: [Errno 30] Read-only file system"
        assert store.problem == problem
        await sub.wait_for(lambda: seqs(sub, root)[-1:] == [6], what="event 6")
        await sub.wait_for(
            lambda: last_status(sub, root).get("problems") == [problem], what="ROOT/status"
        )
        # The heartbeat cannot be written: health says why, not "the loop is stuck".
        later = datetime.now(UTC) + timedelta(seconds=60)
        with pytest.raises(health.Unhealthy) as verdict:
            health.check(small_disk.path, now=later)
        assert f"the state directory {small_disk.path} is on a read-only file system" in str(
            verdict.value
        )
        assert "stuck" not in str(verdict.value)
        assert len(log.events("heartbeat_failed")) == 1

        small_disk.remount(read_only=False)
        await wait_until(lambda: store.problem is None)
        await wait_until(lambda: health.check(small_disk.path).startswith("healthy"))
    assert seqs(sub, root) == list(range(1, 7))
    assert len(log.events("state_save_failed")) == 1
    assert len(log.events("state_save_recovered")) == 1
    assert len(log.events("heartbeat_recovered")) == 1


async def test_a_read_only_disk_at_start(
    broker: tuple[str, int], small_disk: SmallDisk, capfd: pytest.CaptureFixture[str]
) -> None:
    """No lock file can be made and nothing saved: the daemon starts anyway and says so."""
    log = Logs(capfd)
    (small_disk.path / STATE_FILE).mkdir()  # and a directory where the state file should be
    small_disk.remount(read_only=True)
    settings = service_settings(*broker, small_disk.path)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    service = Service(settings)
    problem = f"cannot save {small_disk.path / STATE_FILE}: [Errno 30] Read-only file system"
    assert service.daemon.runner.store.problem == problem
    assert service.daemon.lock is not None
    assert not service.daemon.lock.locked
    async with watched(settings) as sub, running(service):
        await break_and_mend(service, ["brake_left"])
        await sub.wait_for(lambda: seqs(sub, root)[-1:] == [3], what="event 3")
        await sub.wait_for(
            lambda: last_status(sub, root).get("problems") == [problem], what="ROOT/status"
        )
    with pytest.raises(health.Unhealthy, match="read-only file system, so the daemon cannot"):
        health.check(small_disk.path)
    [rejected] = log.events("state_rejected")
    assert rejected["moved_to"] is None
    assert "a directory, not a file; cannot move it aside: [Errno 30]" in rejected["problem"]
    [unlocked] = log.events("state_dir_not_locked")
    assert "Read-only file system" in unlocked["problem"]
    assert seqs(sub, root) == [1, 2, 3]


async def test_a_full_disk_at_start(broker: tuple[str, int], small_disk: SmallDisk) -> None:
    """Not even the heartbeat or the lock file's PID fit: the daemon runs, the lock holds (the
    kernel names the holder), and health says why there is no heartbeat."""
    small_disk.fill()
    settings = service_settings(*broker, small_disk.path)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    service = Service(settings)
    problem = f"cannot save {small_disk.path / STATE_FILE}: [Errno 28] No space left on device"
    assert service.daemon.runner.store.problem == problem
    with pytest.raises(StateDirectoryInUseError, match=f"by process {os.getpid()} "):
        build(settings, outputs=[Recorder()])
    async with watched(settings) as sub, running(service):
        await break_and_mend(service, ["brake_left"])
        await sub.wait_for(lambda: seqs(sub, root)[-1:] == [3], what="event 3")
        await sub.wait_for(
            lambda: last_status(sub, root).get("problems") == [problem], what="ROOT/status"
        )
        assert not (small_disk.path / health.HEARTBEAT_FILE).exists()  # none rather than broken
        with pytest.raises(health.Unhealthy) as verdict:
            health.check(small_disk.path)
        assert str(verdict.value) == (
            f"no heartbeat at {small_disk.path / health.HEARTBEAT_FILE}: the file system of the "
            f"state directory {small_disk.path} is full, so the daemon cannot write one"
        )
        small_disk.free()
        await wait_until(lambda: service.daemon.runner.store.problem is None)
        await wait_until(lambda: health.check(small_disk.path).startswith("healthy"))
    assert small_disk.temporary_files() == []
    assert seqs(sub, root) == [1, 2, 3]


def test_an_existing_lock_file_still_locks_a_read_only_disk(small_disk: SmallDisk) -> None:
    first = build(service_settings("127.0.0.1", 1, small_disk.path), outputs=[Recorder()])
    first.close()
    small_disk.remount(read_only=True)
    again = build(service_settings("127.0.0.1", 1, small_disk.path), outputs=[Recorder()])
    try:
        assert again.lock is not None
        assert again.lock.locked
        with pytest.raises(StateDirectoryInUseError, match=f"by process {os.getpid()} "):
            build(service_settings("127.0.0.1", 1, small_disk.path), outputs=[Recorder()])
    finally:
        again.close()


async def test_state_file_deleted_while_running(
    broker: tuple[str, int], small_disk: SmallDisk
) -> None:
    settings = service_settings(*broker, small_disk.path / "state")
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    service = Service(settings)
    state_file = small_disk.path / "state" / STATE_FILE
    async with watched(settings) as sub, running(service):
        await break_and_mend(service, ["brake_left"])
        state_file.unlink()
        await break_and_mend(service, ["reverse"])
        assert json.loads(state_file.read_text())["seq"] == 6  # written again, seq kept
        # Even the whole directory.
        for path in sorted((small_disk.path / "state").iterdir(), reverse=True):
            path.unlink()
        (small_disk.path / "state").rmdir()
        await break_and_mend(service, ["tail_left"])
        assert json.loads(state_file.read_text())["seq"] == 9
        assert service.daemon.runner.store.problem is None
        await sub.wait_for(lambda: seqs(sub, root)[-1:] == [9], what="event 9")
    assert seqs(sub, root) == list(range(1, 10))


async def test_a_restart_after_unsaved_events_continues_above_what_was_published(
    broker: tuple[str, int], small_disk: SmallDisk
) -> None:
    """Events 4-6 were published but never saved; the next daemon loads seq 3 from the file, on a
    disk that is still full. It must not hand out 4-6 again."""
    settings = service_settings(*broker, small_disk.path)
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    async with watched(settings) as sub:
        first = Service(settings)
        async with running(first):
            await break_and_mend(first, ["brake_left"])
            small_disk.fill()
            await break_and_mend(first, ["reverse"])
            await sub.wait_for(lambda: seqs(sub, root)[-1:] == [6], what="event 6")
        assert first.daemon.runner.store.last_saved_seq == 3
        second = Service(settings)
        assert second.daemon.diagnoser.memory.seq == 3  # what the file says
        async with running(second):
            await break_and_mend(second, ["tail_right"])
            await sub.wait_for(lambda: len(seqs(sub, root)) == 9, what="nine events")
            small_disk.free()
            await wait_until(lambda: second.daemon.runner.store.problem is None)
    published = seqs(sub, root)
    assert strictly_rising(published), published
    assert published[6] > 6  # the second daemon's first event is above all of the first's
    assert json.loads((small_disk.path / STATE_FILE).read_text())["seq"] == published[-1]


async def test_a_restart_after_the_state_file_was_deleted(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    async with watched(settings) as sub:
        first = Service(settings)
        async with running(first):
            await break_and_mend(first, ["brake_left", "reverse"])
            await sub.wait_for(lambda: seqs(sub, root)[-1:] == [6], what="event 6")
        (tmp_path / "state" / STATE_FILE).unlink()
        second = Service(settings)
        async with running(second):
            await break_and_mend(second, ["tail_right"])
            await sub.wait_for(lambda: len(seqs(sub, root)) == 9, what="nine events")
    published = seqs(sub, root)
    assert strictly_rising(published), published
    assert published[6] > 6


def _carlightd(config_path: Path) -> list[str]:
    return ["-m", "carlightd", "run", "--config", str(config_path)]


async def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path / "state")
    root = f"{settings.mqtt.base_topic}/{settings.vehicle.id}"
    config_path = tmp_path / "car.toml"
    write_config(config_path, settings)
    async with watched(settings) as sub:
        first = await asyncio.create_subprocess_exec(
            sys.executable,
            *_carlightd(config_path),
            "--log-format",
            "json",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await sub.wait_for(
                lambda: sub.on(f"{root}/availability")[-1:] == [b"online"],
                timeout_s=30,
                what="online",
            )
            state_before = (tmp_path / "state" / STATE_FILE).read_bytes()
            second = await asyncio.create_subprocess_exec(
                sys.executable,
                *_carlightd(config_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(30):
                out, err = await second.communicate()
            assert second.returncode == 2, err
            assert err.decode() == (
                f"carlightd: state directory {tmp_path / 'state'} is in use by process "
                f"{first.pid} (carlightd run --config {config_path} --log-format json); stop "
                "it first or use another diagnostics.state_dir\n"
            )
            assert out == b""
            assert (tmp_path / "state" / STATE_FILE).read_bytes() == state_before
            assert first.returncode is None
            # The refused daemon never reached the broker: the first was not kicked off.
            assert sub.on(f"{root}/availability") == [b"online"]
        finally:
            first.send_signal(signal.SIGKILL)  # the hardest exit: the kernel frees the lock
            await first.wait()
    after = build(settings, outputs=[Recorder()])
    assert after.lock is not None
    assert after.lock.locked
    after.close()
    assert statelock.LOCK_FILE in os.listdir(tmp_path / "state")
