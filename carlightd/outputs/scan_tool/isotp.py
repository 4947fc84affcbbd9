"""UDS over ISO-TP (ISO 15765-2) on any python-can bus: normal 11-bit addressing, the tester's
requests on `request_id` and our answers on `response_id`.

can-isotp runs the transport in its own threads (segmentation, flow control, timeouts). One more
thread of ours takes each complete request PDU off the stack, has `handle` answer it on the
daemon's loop and sends the answer back, so requests are served one at a time, as on a real
ECU. Everything from the bus is hostile input: malformed frames and broken transfers are counted
by the stack's error handler (its own per-frame warnings are silenced, our summary is bounded);
a datagram python-can cannot even decode is swallowed by the notifier's error hook; the backlog
of complete requests is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import can
import isotp

from carlightd import logs
from carlightd.outputs.scan_tool import uds
from carlightd.outputs.scan_tool.tally import Tally

log = logs.get("carlightd.scan_tool.isotp")

Handle = Callable[[bytes], Awaitable[bytes | None]]

# can-isotp logs a warning per bad frame; its logger is ours, quiet, and its errors are counted.
STACK_LOGGER = "carlightd.scan_tool.isotp.stack"
PADDING = 0xCC  # frames padded to 8 bytes, the byte ISO 15765-2 suggests
RECV_POLL_S = 0.1  # how often the serving thread looks up from an empty queue to see if it stops
CLOSE_GRACE_S = 2.0  # how long close() lets a request already handed to `handle` finish
MAX_BACKLOG = 16  # complete requests waiting to be answered; beyond, the oldest are dropped


class _BusErrors(can.Listener):
    """Keeps the notifier's thread alive through a frame the bus cannot decode (python-can stops
    the thread on an error no listener handles)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def on_message_received(self, msg: can.Message) -> None:
        pass

    def on_error(self, exc: Exception) -> None:
        self.tally.note("isotp_bus_error", error=repr(exc))


class IsotpServer:
    """Serves one ECU's UDS server (`handle`) over ISO-TP on a python-can bus."""

    name = "isotp"

    def __init__(
        self,
        handle: Handle,
        *,
        interface: str = "udp_multicast",
        channel: str = "239.74.163.2",
        request_id: int = 0x7E0,
        response_id: int = 0x7E8,
        bus_options: Mapping[str, Any] | None = None,
        handle_timeout: float = 30.0,
        send_timeout: float = 5.0,
    ) -> None:
        """`bus_options` go to `can.Bus` as they are (e.g. a udp_multicast `port`).
        `handle_timeout` bounds one answer; `send_timeout` one multi-frame transmission (a tester
        that never sends its flow control holds the server that long, then is given up on)."""
        self._handle = handle
        self.interface = interface
        self.channel = channel
        self.request_id = request_id
        self.response_id = response_id
        self.bus_options = dict(bus_options or {})
        self.handle_timeout = handle_timeout
        self.send_timeout = send_timeout
        self.tally = Tally(log)
        self.answered = 0
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._stack: isotp.NotifierBasedCanStack | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Open the bus and start serving; raises OSError or can.CanError (nothing left open)."""
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(loop,), name="isotp-server", daemon=True
        )
        self._thread.start()
        where = (
            f"{self.interface} {self.channel}, request 0x{self.request_id:03X}, "
            f"response 0x{self.response_id:03X}"
        )
        log.info("isotp_serving", where=where)
        return where

    def _open(self) -> None:
        try:
            bus = can.Bus(interface=self.interface, channel=self.channel, **self.bus_options)
        except (ValueError, TypeError, ImportError) as error:  # a configuration python-can refused
            raise can.CanInitializationError(f"cannot open the CAN bus: {error}") from error
        notifier: can.Notifier | None = None
        try:
            notifier = can.Notifier(bus, [_BusErrors(self.tally)], timeout=RECV_POLL_S)
            logging.getLogger(STACK_LOGGER).setLevel(logging.ERROR)
            stack = isotp.NotifierBasedCanStack(
                bus,
                notifier,
                address=isotp.Address(
                    isotp.AddressingMode.Normal_11bits,
                    rxid=self.request_id,
                    txid=self.response_id,
                ),
                error_handler=self._on_stack_error,
                params={
                    "tx_padding": PADDING,
                    "blocking_send": True,
                    "logger_name": STACK_LOGGER,
                },
            )
            stack.start()
        except BaseException as error:
            if notifier is not None:
                notifier.stop()
            bus.shutdown()
            if isinstance(error, (OSError, can.CanError)) or not isinstance(error, Exception):
                raise
            raise can.CanInitializationError(f"cannot start ISO-TP: {error}") from error
        self._bus, self._notifier, self._stack = bus, notifier, stack

    async def close(self) -> None:
        """Stop serving, stop the stack and shut the bus; idempotent."""
        self._stopping.set()
        thread, stack, notifier, bus = self._thread, self._stack, self._notifier, self._bus
        self._thread = self._stack = self._notifier = self._bus = None
        if thread is None and bus is None:
            return
        await asyncio.to_thread(self._shut, thread, stack, notifier, bus)
        if self.tally.counts:
            log.info("isotp_closed", answered=self.answered, **dict(self.tally.counts))

    @staticmethod
    def _shut(
        thread: threading.Thread | None,
        stack: isotp.NotifierBasedCanStack | None,
        notifier: can.Notifier | None,
        bus: can.BusABC | None,
    ) -> None:
        if thread is not None:
            thread.join()
        if stack is not None:
            stack.stop()
        if notifier is not None:
            notifier.stop()
        if bus is not None:
            bus.shutdown()

    # --- serving (its own thread) ---------------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        stack = self._stack
        assert stack is not None
        while not self._stopping.is_set():
            request = stack.recv(block=True, timeout=RECV_POLL_S)
            if request is None:
                continue
            self._trim_backlog(stack)
            response = self._answer(loop, stack, bytes(request))
            if response and not self._stopping.is_set():
                self._send(stack, response)

    def _answer(
        self, loop: asyncio.AbstractEventLoop, stack: isotp.NotifierBasedCanStack, request: bytes
    ) -> bytes | None:
        """`handle`'s answer. While it is not ready, 'response pending' (7F SID 78) goes out
        after P2server and again before each P2*server runs out, as uds.py asks of transports;
        one that outlasts `handle_timeout` is cancelled."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._call_handle(request), loop)
        except RuntimeError:  # the loop is closed: the daemon is going
            self._stopping.set()
            return None
        started = time.monotonic()
        deadline = started + self.handle_timeout
        pending_at = started + uds.RESPONSE_PENDING_AFTER_S
        while True:
            # Never longer than RECV_POLL_S at a time, so that close() is not kept waiting.
            timeout = min(pending_at, deadline, time.monotonic() + RECV_POLL_S) - time.monotonic()
            try:
                response = future.result(timeout=max(0.0, timeout))
            except concurrent.futures.TimeoutError:
                now = time.monotonic()
                if self._stopping.is_set():  # closing: a moment to finish (a clear, say)
                    deadline = min(deadline, now + CLOSE_GRACE_S)
                if now >= deadline:
                    future.cancel()
                    self.tally.note("isotp_handler_timeout", request=request[:8].hex())
                    return None
                if now >= pending_at:
                    self._send(stack, uds.response_pending(request))
                    pending_at = now + uds.RESPONSE_PENDING_EVERY_S
                continue
            except Exception as error:  # the UDS server promises not to raise; if it does: silence
                self.tally.note("isotp_handler_failed", error=repr(error))
                return None
            self.answered += 1
            return response

    async def _call_handle(self, request: bytes) -> bytes | None:
        return await self._handle(request)

    def _send(self, stack: isotp.NotifierBasedCanStack, response: bytes) -> None:
        try:
            stack.send(bytearray(response), send_timeout=self.send_timeout)
        except isotp.BlockingSendFailure as error:  # no flow control, or an interrupted transfer
            self.tally.note("isotp_send_failed", error=type(error).__name__)
        except (ValueError, RuntimeError) as error:  # too long for ISO-TP, or the queue is full
            self.tally.note("isotp_send_refused", error=repr(error))

    def _trim_backlog(self, stack: isotp.NotifierBasedCanStack) -> None:
        """A tester flooding requests faster than they are answered loses the oldest."""
        while stack.rx_queue.qsize() > MAX_BACKLOG:
            stack.recv(block=False)
            self.tally.note("isotp_request_dropped")

    def _on_stack_error(self, error: isotp.IsoTpError) -> None:
        self.tally.note("isotp_" + type(error).__name__)
