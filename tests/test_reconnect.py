"""Connection trouble is normal: the diagnosis never stops, and a broker that comes back (even one
that lost everything) converges to the truth. Each test runs its own private Mosquitto."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from carlightd.service.daemon import Service
from carlightd.service.mqtt import BACKOFF_MAX_S, backoff_delays, client_id
from tests.brokers import PrivateBroker, free_port, subscribed
from tests.conftest import running, service_settings, wait_until


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    delays = list(islice(backoff_delays(random.Random(3)), 12))
    steps = [min(BACKOFF_MAX_S, 0.5 * 2**i) for i in range(12)]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    assert max(delays) <= BACKOFF_MAX_S


async def test_broker_restart_republishes_everything(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    broker = private_broker()
    service = Service(service_settings("127.0.0.1", broker.port, tmp_path))
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.publisher.connected and service.publisher.backlog == 0)
        broker.stop()  # a broker without persistence: everything retained is gone
        await wait_until(lambda: not service.publisher.connected)
        cycles = service.daemon.diagnoser.cycle
        service.daemon.car.inject("headlamp_left", "open_circuit")
        # The diagnosis goes on without a broker.
        await wait_until(lambda: service.daemon.diagnoser.cycle >= cycles + 5)
        assert ("headlamp_left", "open_circuit") in service.daemon.diagnoser.memory.records
        broker = private_broker(port=broker.port)
        await wait_until(
            lambda: service.publisher.connections == 2 and service.publisher.backlog == 0
        )
        async with subscribed("127.0.0.1", broker.port, f"{root}/#") as sub:
            await sub.wait_for(
                lambda: len({t for t, _, retained in sub.messages if retained}) >= 20,
                what="the retained state again",
            )
            assert sub.on(f"{root}/availability") == [b"online"]
            [faults] = sub.json_on(f"{root}/faults")[-1:]
            assert [f["component"] for f in faults["faults"]] == ["headlamp_left"]
            components = {t.rsplit("/", 1)[1] for t, _, _ in sub.messages if "/components/" in t}
            assert components == {c.id for c in service.settings.components}


async def test_broker_down_at_start(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker]
) -> None:
    port = free_port()
    service = Service(service_settings("127.0.0.1", port, tmp_path))
    root = service.publisher.topics.root
    async with running(service):
        await wait_until(lambda: service.daemon.diagnoser.cycle >= 5)
        assert not service.publisher.connected  # nothing listens there yet; cycles carry on
        broker = private_broker(port=port)
        async with subscribed("127.0.0.1", broker.port, f"{root}/availability") as sub:
            await sub.wait_for(lambda: sub.on(f"{root}/availability") == [b"online"], 15.0)
        await wait_until(lambda: service.publisher.connections == 1)  # once, after the backoff


def test_client_ids_are_stable_and_unique_per_vehicle_root() -> None:
    ours = client_id("carlightd/demo-car", "demo-car")
    assert ours == client_id("carlightd/demo-car", "demo-car")
    assert ours != client_id("test/demo-car", "demo-car")
    assert client_id("carlightd/car-1", "car-1").startswith("carlightd-car-1-")
