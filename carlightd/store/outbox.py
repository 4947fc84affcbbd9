"""The durable outbox: fault events waiting for the broker's acknowledgement.

An event enters the outbox in the same atomic write that records the fault memory's new state
(see `StateStore.save`), before anything is published; it leaves only once the broker has
acknowledged it (QoS 1 PUBACK). After a reconnect or a restart, what is still here is sent again,
in order. Delivery is therefore at least once: a consumer de-duplicates by `seq`.

The outbox is bounded (`LIMIT` events, more than a day of transitions for a car). Past the bound
the oldest event is dropped, with an error line naming its `seq`, so a consumer sees the gap.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable

from carlightd import logs
from carlightd.core.memory import FaultEvent

log = logs.get("carlightd.outbox")

LIMIT = 10_000


class Outbox:
    def __init__(self, events: Iterable[FaultEvent] = (), limit: int = LIMIT) -> None:
        self.limit = limit
        self._events: deque[FaultEvent] = deque()
        self.dropped = 0
        self.extend(events)

    def __len__(self) -> int:
        return len(self._events)

    def extend(self, events: Iterable[FaultEvent]) -> None:
        for event in events:
            if len(self._events) >= self.limit:
                lost = self._events.popleft()
                self.dropped += 1
                log.error("outbox_full_event_dropped", seq=lost.seq, limit=self.limit)
            self._events.append(event)

    def first(self) -> FaultEvent | None:
        return self._events[0] if self._events else None

    def last(self) -> FaultEvent | None:
        return self._events[-1] if self._events else None

    def renumber_after(self, seq: int, shift: int) -> int:
        """Move the events numbered above `seq` up by `shift` (they were never published: their
        numbers turned out to be taken); returns how many moved."""
        moved = 0
        for index, event in enumerate(self._events):
            if event.seq > seq:
                self._events[index] = dataclasses.replace(event, seq=event.seq + shift)
                moved += 1
        return moved

    def acknowledge(self, seq: int) -> None:
        """The broker has the event with this seq: it leaves the outbox (it is the oldest)."""
        if self._events and self._events[0].seq == seq:
            self._events.popleft()

    def pending(self) -> list[FaultEvent]:
        return list(self._events)
