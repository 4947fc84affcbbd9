"""The shared plumbing: waiting for an event or a timeout, and signals lent to an entry point."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from carlightd.runtime import signals
from carlightd.runtime.waiting import wait_any

# --- wait_any ----------------------------------------------------------------------------------


async def test_an_event_already_set_answers_at_once() -> None:
    event = asyncio.Event()
    event.set()
    assert await wait_any(event, timeout_s=0) is True


async def test_a_timeout_answers_false_and_sets_nothing() -> None:
    event = asyncio.Event()
    assert await wait_any(event, timeout_s=0.01) is False
    assert not event.is_set()


async def test_an_event_set_while_waiting_ends_the_wait() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_any(event, timeout_s=None) is True  # no limit: only the event ends it


async def test_any_of_several_events_ends_the_wait_and_no_waiter_is_left_behind() -> None:
    stop, other = asyncio.Event(), asyncio.Event()
    before = len(asyncio.all_tasks())
    asyncio.get_running_loop().call_soon(other.set)
    assert await wait_any(stop, other, timeout_s=None) is True
    assert not stop.is_set()
    await asyncio.sleep(0)  # the cancelled waiters finish
    assert len(asyncio.all_tasks()) == before


async def test_several_events_time_out_together() -> None:
    assert await wait_any(asyncio.Event(), asyncio.Event(), timeout_s=0.01) is False


async def test_no_event_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        await wait_any(timeout_s=1)


# --- signals -----------------------------------------------------------------------------------


@pytest.fixture
def previous_usr1() -> Iterator[list[int]]:
    """SIGUSR1 with a Python handler of its own (recording), put back after the test."""
    seen: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGUSR1, record)
    yield seen
    signal.signal(signal.SIGUSR1, before)


async def _signal_self(signum: int, event: asyncio.Event) -> None:
    os.kill(os.getpid(), signum)
    async with asyncio.timeout(10):
        await event.wait()


async def test_a_signal_reaches_the_handler_inside_and_the_previous_one_after(
    previous_usr1: list[int],
) -> None:
    called = asyncio.Event()
    before = signal.getsignal(signal.SIGUSR1)
    with signals.handled({signal.SIGUSR1: called.set}):
        await _signal_self(signal.SIGUSR1, called)
        assert previous_usr1 == []  # the entry point's handler, not the previous one
    assert signal.getsignal(signal.SIGUSR1) is before
    os.kill(os.getpid(), signal.SIGUSR1)
    assert previous_usr1 == [signal.SIGUSR1]  # the previous handler is back and runs


async def test_ignored_after_when_asked(previous_usr1: list[int]) -> None:
    with signals.handled({signal.SIGUSR1: lambda: None}, ignore_after=[signal.SIGUSR1]):
        pass
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGUSR1)  # ignored: nothing runs, nothing raises
    assert previous_usr1 == []


async def test_handlers_are_given_back_when_the_body_fails(previous_usr1: list[int]) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with (
        pytest.raises(RuntimeError, match="body failed"),
        signals.handled({signal.SIGUSR1: lambda: None}),
    ):
        raise RuntimeError("body failed")
    assert signal.getsignal(signal.SIGUSR1) is before


async def test_stopping_takes_sigterm_and_sigint_and_more() -> None:
    stop, reload = asyncio.Event(), asyncio.Event()
    term_before = signal.getsignal(signal.SIGTERM)
    int_before = signal.getsignal(signal.SIGINT)
    with signals.stopping(stop.set, also={signal.SIGUSR2: reload.set}):
        await _signal_self(signal.SIGTERM, stop)
        stop.clear()
        await _signal_self(signal.SIGINT, stop)
        await _signal_self(signal.SIGUSR2, reload)
    assert signal.getsignal(signal.SIGTERM) is term_before
    assert signal.getsignal(signal.SIGINT) is int_before
