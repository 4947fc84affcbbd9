"""A small MQTT broker in-process (amqtt, an optional extra) for the demo and for machines without
Mosquitto. Not for production: it keeps everything in memory and allows anonymous clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from carlightd.errors import CarlightdError
from carlightd.runtime import signals

SHUTDOWN_S = 1.0


class EmbeddedBrokerUnavailableError(CarlightdError, RuntimeError):
    pass


@contextlib.asynccontextmanager
async def embedded_broker(host: str, port: int) -> AsyncIterator[None]:
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise EmbeddedBrokerUnavailableError(
            "no MQTT broker is listening and the embedded one is not installed: "
            "pip install 'carlightd[demo]' (or run `make demo`), or start Mosquitto"
        ) from None
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    # amqtt and its state machine log every step at INFO; a demo wants carlightd's lines only.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    broker = Broker(config)
    await broker.start()
    try:
        yield
    finally:
        # amqtt waits for its clients to go; a demo that is told to stop does not wait for them.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_S):
                await broker.shutdown()


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    with signals.stopping(stop.set):
        async with embedded_broker(host, port):
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="carlightd's embedded MQTT broker (amqtt)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
