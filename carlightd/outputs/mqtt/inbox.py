"""What arrives on the daemon's subscriptions is hostile input: counted, bounded, logged sparingly.

A flood must not become a flood of log lines: requests the client had to discard (its incoming
queue is bounded) are counted, and per-request log lines are limited per interval; what was left
out is said in one `requests_summary` line per interval.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import aiomqtt

# MQTT topic names: at most 65,535 bytes of UTF-8, no wildcards, no NUL (MQTT 3.1.1 §4.7).
MAX_TOPIC_BYTES = 65_535
# Per-request log lines per summary interval; the rest are counted.
LOG_LINES_PER_INTERVAL = 20
SUMMARY_INTERVAL_S = 10.0


@dataclass
class RequestStats:
    """Counts since the daemon started (a summary line reports the change per interval)."""

    received: int = 0  # requests taken from the queue
    answered: int = 0  # responses published (errors included)
    errors: int = 0  # error responses among them
    dropped: int = 0  # discarded by the client: its incoming queue was full
    unanswerable: int = 0  # no legal response topic: logged, not answered
    retained_ignored: int = 0  # retained requests, never executed
    failed: int = 0  # handling raised unexpectedly (a bug): logged, the daemon carried on
    log_lines_suppressed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def counting_queue(stats: RequestStats) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A bounded incoming queue that counts what it discards instead of logging each one."""

    class CountingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if self.full():
                stats.dropped += 1
                return
            super().put_nowait(item)

    return CountingQueue


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be published to, or None."""
    if any(char in topic for char in "+#\0"):
        return "it would contain a wildcard or NUL"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"it would be {size} bytes; MQTT allows {MAX_TOPIC_BYTES}"
    return None


class Throttle:
    """At most `limit` log lines per interval; `allow()` says whether this one may be written."""

    def __init__(self, stats: RequestStats, limit: int = LOG_LINES_PER_INTERVAL) -> None:
        self.stats = stats
        self.limit = limit
        self._written = 0

    def allow(self) -> bool:
        if self._written < self.limit:
            self._written += 1
            return True
        self.stats.log_lines_suppressed += 1
        return False

    def new_interval(self) -> None:
        self._written = 0


def changes(now: RequestStats, before: dict[str, int]) -> dict[str, Any]:
    """What changed since `before`, for a summary line; empty when nothing did."""
    current = now.as_dict()
    delta = {key: value - before.get(key, 0) for key, value in current.items()}
    return {key: value for key, value in delta.items() if value}
