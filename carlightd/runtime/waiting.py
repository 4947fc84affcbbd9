"""Waiting until an event is set or a time has passed: how every loop here sleeps between its
steps and still stops at once when told to."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_any(*events: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until one of `events` is set, or `timeout_s` (None: no limit) has passed.

    True if one is set (at once if one already is); False on the timeout. A timeout of zero or
    less gives the loop one turn and returns."""
    if not events:
        raise ValueError("wait_any needs at least one event")
    if any(event.is_set() for event in events):
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            if len(events) == 1:
                await events[0].wait()
            else:
                await _first_of(events)
    return any(event.is_set() for event in events)


async def _first_of(events: tuple[asyncio.Event, ...]) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
