"""Asynchronous reads of the simulated car, behaving as a real in-vehicle bus would.

A read yields to the loop, as real I/O does; a controller that has stopped answering never answers
at all, so the caller's per-read timeout is what ends the wait (exactly as with real hardware).
"""

from __future__ import annotations

import asyncio

from carlightd.domain import Reading
from carlightd.vehicle.car import Car, NoResponseError


class SimulatedSensorBus:
    # No simulated latency by default: a timer per read per cycle costs a fleet of cars dearly
    # and shows nothing a yield does not.
    def __init__(self, car: Car, latency_s: float = 0.0) -> None:
        self.car = car
        self.latency_s = latency_s

    async def read(self, part_id: str) -> Reading:
        await asyncio.sleep(self.latency_s)
        try:
            return self.car.measure(part_id)
        except NoResponseError:
            await asyncio.Event().wait()  # never set: hangs until the caller's timeout
            raise  # pragma: no cover - unreachable
