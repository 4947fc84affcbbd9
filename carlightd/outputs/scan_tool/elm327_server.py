"""Where an OBD-II app reaches the ELM327 interpreter: TCP, as a Wi-Fi dongle, and a
pseudo-terminal, as a USB or Bluetooth serial adapter.

Each TCP connection is an adapter of its own (its own `Elm327Session`); the pseudo-terminal is one
adapter for whoever opens it. Every byte is the client's to choose: a session bounds what it keeps,
reads are bounded, and what a client does not read is bounded too (a TCP client that stops reading
is dropped; on the pty, as on a serial line, answers that no one reads are lost). TCP slots are
few: idle clients keep theirs (apps sit idle between polls) until a newcomer finds the server
full, when the client silent the longest gives its slot up if it has been silent long enough, so
connections that never speak cannot lock every app out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import tty
from dataclasses import dataclass

from carlightd import logs
from carlightd.outputs.scan_tool.elm327 import Elm327Session
from carlightd.outputs.scan_tool.tally import worth_logging
from carlightd.outputs.scan_tool.view import ScanToolLink

log = logs.get("carlightd.scan_tool.elm327")

# Bytes read at a time: what one `feed` answers is at most a few hundred bytes per CR in it.
READ_CHUNK = 256
MAX_TCP_CLIENTS = 4
# When the server is full, a client silent (no byte received) this long gives up its slot to a
# newcomer.
EVICT_AFTER_S = 5.0
# SO_LINGER on, zero seconds: closing sends a reset.
LINGER_RESET = struct.pack("ii", 1, 0)
# A client whose unread answers pass this is waited for DRAIN_TIMEOUT_S, then dropped.
WRITE_BUFFER_HIGH = 16 * 1024
DRAIN_TIMEOUT_S = 10.0
# How long close() lets a conversation end by itself (a clear in progress) before cancelling it.
CLOSE_TIMEOUT_S = 5.0
# The pty: input waiting for the interpreter (reading pauses beyond it).
PTY_INBOX_MAX = 4 * 1024
# After EIO (no one holds the slave) or EOF, the master is read again after this pause, not in a
# tight loop.
PTY_RETRY_S = 0.2


@dataclass(eq=False)
class _TcpClient:
    writer: asyncio.StreamWriter
    heard_at: float  # loop time of the last byte received from it (or of its connecting)
    evicted: bool = False  # closed to make room: its slot is free, its handler is ending


class Elm327TcpServer:
    """ELM327 on TCP: up to `max_clients` at once; idle ones are kept until a newcomer finds the
    server full, when the one silent the longest is closed for it if it has been silent at least
    `evict_after_s`; otherwise the newcomer is refused (reset at once)."""

    name = "elm327"

    def __init__(
        self,
        link: ScanToolLink,
        *,
        host: str,
        port: int,
        max_clients: int = MAX_TCP_CLIENTS,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        evict_after_s: float = EVICT_AFTER_S,
    ) -> None:
        self._link = link
        self._host = host
        self._port = port
        self._max_clients = max_clients
        self._drain_timeout_s = drain_timeout_s
        self._evict_after_s = evict_after_s
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], _TcpClient] = {}
        self.refused = 0  # connections closed at once: too many clients, none silent long enough
        self.evicted = 0  # silent clients closed to make room for a newcomer
        self.dropped = 0  # clients dropped for not reading their answers
        self.failures = 0  # conversations ended by a bug (logged, the server serves on)

    @property
    def client_count(self) -> int:
        """Clients holding a slot (evicted ones whose handlers are still ending hold none)."""
        return sum(not client.evicted for client in self._clients.values())

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting a connection ends its conversation (EOF, or a lost connection in a drain);
        # cancelling the handlers instead would make asyncio 3.11's streams log an error.
        for client in self._clients.values():
            client.writer.transport.abort()
        handlers = list(self._clients)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT_S)
            for task in stuck:
                task.cancel()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = asyncio.get_running_loop().time()
        if self._server is None or not self._make_room(now):
            self._refuse(writer)
            return
        task = asyncio.current_task()
        assert task is not None  # a stream handler always runs in a task
        client = _TcpClient(writer, heard_at=now)
        self._clients[task] = client
        peer = writer.get_extra_info("peername")
        session = Elm327Session(self._link)
        log.debug("elm327_client_connected", peer=str(peer))
        ended_by_client = False
        try:
            await self._converse(session, reader, client)
            ended_by_client = True
        except TimeoutError:
            self.dropped += 1
            if worth_logging(self.dropped):
                log.info("elm327_client_not_reading_dropped", dropped=self.dropped)
        except ConnectionError:
            pass  # the client went away mid-answer
        except Exception:  # a bug: this client is closed, the server serves on
            self.failures += 1
            if worth_logging(self.failures):
                log.exception("elm327_client_failed", peer=str(peer), failures=self.failures)
        finally:
            if ended_by_client and not client.evicted:
                await self._hang_up(writer)
            # Otherwise abort, not close: a close would wait for output that may never be read.
            writer.transport.abort()
            del self._clients[task]
            log.debug(
                "elm327_client_closed",
                peer=str(peer),
                lines=session.lines,
                rejected=session.rejected,
            )

    def _make_room(self, now: float) -> bool:
        """Whether a newcomer gets a slot: a free one, or the one of the client silent the longest
        if it has been silent `evict_after_s` (that client is closed)."""
        holding = [client for client in self._clients.values() if not client.evicted]
        if len(holding) < self._max_clients:
            return True
        quietest = min(holding, key=lambda client: client.heard_at, default=None)
        if quietest is None or now - quietest.heard_at < self._evict_after_s:
            return False
        quietest.evicted = True
        # Its conversation reads EOF and ends; no hang-up: nothing it sent is left to answer.
        quietest.writer.transport.abort()
        self.evicted += 1
        if worth_logging(self.evicted):  # newcomers in a loop cannot flood the log
            log.info(
                "elm327_silent_client_evicted",
                evicted=self.evicted,
                silent_s=round(now - quietest.heard_at, 1),
                limit=self._max_clients,
            )
        return True

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        self.refused += 1
        if worth_logging(self.refused):  # a connection flood cannot flood the log
            log.info("elm327_client_refused", refused=self.refused, limit=self._max_clients)
        # A reset, not an orderly EOF: the app sees a connection error rather than an adapter
        # that accepted it and hung up, and a connection flood leaves no TIME_WAIT behind.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already reset by the client: closed all the same
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        writer.transport.abort()

    async def _hang_up(self, writer: asyncio.StreamWriter) -> None:
        """After the client's EOF: its last answers go out, then ours, within the drain timeout."""
        writer.close()
        try:
            async with asyncio.timeout(self._drain_timeout_s):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass  # the caller aborts

    async def _converse(
        self, session: Elm327Session, reader: asyncio.StreamReader, client: _TcpClient
    ) -> None:
        writer = client.writer
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        loop = asyncio.get_running_loop()
        while data := await reader.read(READ_CHUNK):
            client.heard_at = loop.time()
            answer = await session.feed(data)
            if answer:
                writer.write(answer)
                async with asyncio.timeout(self._drain_timeout_s):
                    await writer.drain()


class Elm327PtyServer:
    """ELM327 on a pseudo-terminal in raw mode: `start` returns the slave's path for the app.

    Like a serial line: what the app does not read stays in the terminal's buffer, and what does
    not fit there is lost (counted), so an app that left unread answers behind leaves at most that
    buffer to the next one (which flushes it, as apps do on connecting). The server holds the slave
    open itself, so the master does not hang up while apps open and close the slave; EIO on the
    master (no one holds the slave) is handled all the same: read again after a pause."""

    name = "elm327_pty"

    def __init__(self, link: ScanToolLink) -> None:
        self._session = Elm327Session(link)
        self._master: int | None = None
        self._slave: int | None = None
        self._inbox = bytearray()
        self._input = asyncio.Event()
        self._reading = False
        self._worker: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._io_errors = 0
        self.lost_output = 0  # answer bytes that did not fit in the terminal's buffer

    @property
    def lines(self) -> int:
        """Command lines answered so far."""
        return self._session.lines

    async def start(self) -> str:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # no echo, no CR/LF translation: the bytes are the chip's
            os.set_blocking(master, False)
            path = os.ttyname(slave)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave
        self._worker = asyncio.create_task(self._work(), name="elm327_pty")
        self._resume_reading()
        return path

    async def close(self) -> None:
        master, slave = self._master, self._slave
        if master is None or slave is None:
            return
        self._pause_reading()
        if self._retry is not None:
            self._retry.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._master = self._slave = None
        os.close(master)
        os.close(slave)
        log.debug(
            "elm327_pty_closed",
            lines=self._session.lines,
            rejected=self._session.rejected,
            lost_output=self.lost_output,
        )

    def _resume_reading(self) -> None:
        if self._master is not None and not self._reading:
            asyncio.get_running_loop().add_reader(self._master, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._master is not None and self._reading:
            asyncio.get_running_loop().remove_reader(self._master)
            self._reading = False

    def _io_error(self, what: str, error: OSError) -> None:
        if error.errno == errno.EIO:
            return  # no one holds the slave: normal between two apps
        self._io_errors += 1
        if worth_logging(self._io_errors):
            log.warning(what, error=str(error), errors=self._io_errors)

    def _on_readable(self) -> None:
        assert self._master is not None  # the reader is removed before the fd is closed
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as error:
            self._io_error("elm327_pty_read_failed", error)
            data = b""
        if not data:  # EIO or EOF: look again in a while, not in a tight loop
            self._pause_reading()
            self._retry = asyncio.get_running_loop().call_later(PTY_RETRY_S, self._resume_reading)
            return
        self._inbox += data
        self._input.set()
        if len(self._inbox) >= PTY_INBOX_MAX:
            self._pause_reading()  # the interpreter catches up first

    async def _work(self) -> None:
        while True:
            await self._input.wait()
            self._input.clear()
            while self._inbox:
                chunk = bytes(self._inbox[:READ_CHUNK])
                del self._inbox[:READ_CHUNK]
                try:
                    answer = await self._session.feed(chunk)
                except Exception:  # a bug: this input is lost, the adapter answers on
                    log.exception("elm327_pty_failed")
                    continue
                self._write(answer)
            self._resume_reading()

    def _write(self, answer: bytes) -> None:
        if self._master is None or not answer:
            return
        try:
            written = os.write(self._master, answer)
        except BlockingIOError:
            written = 0  # the terminal's buffer is full: no one is reading
        except OSError as error:
            self._io_error("elm327_pty_write_failed", error)
            written = 0
        self.lost_output += len(answer) - written
