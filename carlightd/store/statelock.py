"""One daemon per state directory: an exclusive `flock` on `{state_dir}/carlightd.lock`, held for
the daemon's life.

`flock`, not POSIX record locks: it conflicts between two opens in the same process too, and the
kernel drops it when the process dies, however it dies, so a lock is never left behind. The file is
held open read-only (a lock needs no write access, and a file held open for writing would stop an
administrator remounting the disk read-only). The holder writes its PID and command line into it
through a short-lived second descriptor, so that a refused daemon can say who holds the directory;
`/proc/locks`, which the kernel keeps exact, is asked first.

A directory where the lock file cannot be created (read-only, or not a directory at all) does not
stop the start: nothing can be written there by this daemon or any other, so a second one could not
corrupt the state either. The daemon runs unlocked and says so; if the lock file already exists, it
is locked even on a read-only disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from carlightd import logs
from carlightd.errors import CarlightdError
from carlightd.store.state import describe_error, printable, set_aside

log = logs.get("carlightd.statelock")

LOCK_FILE = "carlightd.lock"
_MAX_COMMAND = 200


class StateDirectoryInUseError(CarlightdError):
    """Another process holds the state directory: this daemon must not start (exit 2)."""

    def __init__(self, state_dir: Path, pid: int | None, command: str | None) -> None:
        holder = "another process" if pid is None else f"process {pid}"
        if command:
            holder += f" ({command})"
        super().__init__(
            f"state directory {printable(state_dir)} is in use by {holder}; stop it first or "
            "use another diagnostics.state_dir"
        )
        self.state_dir = state_dir
        self.pid = pid
        self.command = command


@dataclass
class StateLock:
    path: Path
    fd: int | None  # None: not locked (`problem` says why)
    problem: str | None = None
    # A lock dropped without `release` (a daemon built and thrown away) still closes its file.
    _finalizer: weakref.finalize[[int], StateLock] | None = field(
        init=False, repr=False, default=None
    )

    def __post_init__(self) -> None:
        if self.fd is not None:
            self._finalizer = weakref.finalize(self, os.close, self.fd)

    @property
    def locked(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Give the directory up (closing the descriptor drops the lock); safe to call twice."""
        self.fd = None
        if self._finalizer is not None:
            self._finalizer()


def acquire(state_dir: Path) -> StateLock:
    """Lock `state_dir` for this process. Raises StateDirectoryInUseError if another holds it;
    returns an unlocked StateLock, with its `problem`, if the directory cannot be locked at all."""
    path = state_dir / LOCK_FILE
    fd: int | None = None
    for attempt in range(2):
        try:
            fd = _open(path)
            break
        except _NotAFileError as not_a_file:
            if attempt:
                return _unlocked(path, f"{printable(path)} is {not_a_file}")
            try:  # something else took the name: out of the way, as a bad state file would be
                moved_to = set_aside(path)
            except OSError as error:
                return _unlocked(
                    path,
                    f"{printable(path)} is {not_a_file} and cannot be moved aside: "
                    f"{describe_error(error)}",
                )
            log.error(
                "state_lock_file_rejected",
                path=printable(path),
                problem=str(not_a_file),
                moved_to=printable(moved_to),
            )
        except OSError as error:
            return _unlocked(path, f"cannot create {printable(path)}: {describe_error(error)}")
    assert fd is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, command = _holder(path, fd)
        os.close(fd)
        raise StateDirectoryInUseError(state_dir, pid, command) from None
    except OSError as error:  # a file system without locks
        os.close(fd)
        return _unlocked(path, f"cannot lock {printable(path)}: {describe_error(error)}")
    _write_holder(path)
    return StateLock(path, fd)


class _NotAFileError(CarlightdError):
    pass


def _open(path: Path) -> int:
    """A read-only descriptor on the lock file, created if need be (and if the disk allows)."""
    # NONBLOCK: a fifo put there must not hang the start; NOFOLLOW: nor send us elsewhere.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _NotAFileError("a symbolic link") from None
        if error.errno == errno.EISDIR:
            raise _NotAFileError("a directory") from None
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
            raise
        # It cannot be created; one that already exists can still be locked.
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise error from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotAFileError("not a regular file")
    return fd


def _unlocked(path: Path, problem: str) -> StateLock:
    log.warning("state_dir_not_locked", path=printable(path), problem=problem)
    return StateLock(path, None, problem)


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "carlightd"):
        argv[0] = "carlightd"
    elif argv:
        argv[0] = Path(argv[0]).name
    return " ".join(argv)[:_MAX_COMMAND]


def _write_holder(path: Path) -> None:
    """`PID\\ncommand\\n` in place; on failure (a full disk) the file is emptied rather than left
    naming a previous holder."""
    content = f"{os.getpid()}\n{_command_line()}\n".encode(errors="backslashreplace")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # a read-only disk: /proc/locks still names us
    try:
        os.pwrite(fd, content, 0)
        os.ftruncate(fd, len(content))
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _holder(path: Path, fd: int) -> tuple[int | None, str | None]:
    """Who holds the lock: `/proc/locks` for the PID when it can tell, the file for the rest."""
    recorded_pid: int | None = None
    recorded_command: str | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):  # empty: its write failed
        lines = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
        recorded_pid = int(lines[0])
        recorded_command = lines[1].strip() if len(lines) > 1 else None
    pid = _pid_from_proc_locks(fd)
    if pid is None or pid == recorded_pid:
        return recorded_pid, recorded_command
    return pid, _proc_command_line(pid)


def _pid_from_proc_locks(fd: int) -> int | None:
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF"; "1: -> FLOCK …" is a waiter.
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            return int(fields[4]) if fields[4].isdigit() and int(fields[4]) > 0 else None
    return None


def _proc_command_line(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    if not argv:
        return None
    argv[0] = Path(argv[0]).name
    return " ".join(argv)[:_MAX_COMMAND]
