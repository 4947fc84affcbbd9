"""Reading the simulated car as a real in-vehicle bus would be read: one poll per cycle.

A poll yields to the loop once, as real I/O does, and then every part answers from the car's
present state. A controller that has stopped answering never answers at all: the requests it
should have answered are left to time out, all together (they would be in flight at once on a
real bus), so the poll ends after the read timeout, never earlier and never later.

One poll rather than a task and a timer per read: for a fleet of hundreds of cars this is most of
the loop's work (it cost more than the diagnosis itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from carlightd import logs
from carlightd.core.selftests import NO_READING, ReadOutcome
from carlightd.sources.simulated.car import Car, NoResponseError

log = logs.get("carlightd.cycle")


class SimulatedSensorBus:
    def __init__(self, car: Car) -> None:
        self.car = car

    async def read_all(self, part_ids: Iterable[str], timeout_s: float) -> dict[str, ReadOutcome]:
        await asyncio.sleep(0)
        readings: dict[str, ReadOutcome] = {}
        unanswered = False
        for part_id in part_ids:
            try:
                readings[part_id] = self.car.measure(part_id)
            except NoResponseError:
                readings[part_id] = NO_READING
                unanswered = True
            except Exception:
                log.exception("sensor_read_failed", component=part_id)
                readings[part_id] = NO_READING
        if unanswered:
            await asyncio.sleep(timeout_s)
        return readings
