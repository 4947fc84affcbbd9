"""Counting what hostile or broken clients do, with a log that stays small under a flood."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


def worth_logging(count: int, first: int = 1) -> bool:
    """Whether the count-th occurrence of something a client can repeat is logged: the first
    `first`, then each power of two (1, 2, 4, 8 ... by default)."""
    return count > 0 and (count <= first or count & (count - 1) == 0)


class Tally:
    """Counts events by name; logs the first few of each and then each power of two, so a flood
    of a million bad frames costs about twenty-five lines. Safe from any thread (can-isotp and
    python-can call it from theirs)."""

    def __init__(self, log: Any, first: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self._log = log
        self._first = first
        self._lock = threading.Lock()

    def note(self, event: str, **fields: object) -> None:
        with self._lock:
            self.counts[event] += 1
            count = self.counts[event]
        if worth_logging(count, self._first):
            self._log.warning(event, count=count, **fields)
