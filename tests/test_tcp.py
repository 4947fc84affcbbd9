"""TCP tuning of the broker connection. What it buys (detection overhead 37 ms → under 1 ms on a
Mosquitto with Nagle on) is measured by the benchmark, not timed here; these check that the
tuned client is really in place and still speaks MQTT."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest

from carlightd.runtime import tcp
from carlightd.runtime.connection import make_client
from tests.brokers import unique_base_topic
from tests.conftest import service_settings


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_QUICKACK is Linux only")
async def test_the_daemons_client_acknowledges_at_once_and_still_works(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    settings = service_settings(*broker, tmp_path)
    client = make_client(settings, f"test-tcp-{uuid.uuid4().hex[:8]}", will=None)
    reads: list[int] = []
    paho = client._client
    wrapped = paho.loop_read

    def counting(max_packets: int = 1) -> int:
        reads.append(max_packets)
        result: int = wrapped(max_packets)
        return result

    paho.loop_read = counting  # type: ignore[method-assign,assignment]
    topic = f"{unique_base_topic()}/echo"
    async with client:
        sock = paho.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"ping", qos=1)
        async for message in client.messages:
            assert message.payload == b"ping"
            break
    # Every read went through the wrapper that re-arms TCP_QUICKACK (the name tells it apart from
    # paho's own method).
    assert reads
    assert wrapped.__name__ == "loop_read"
    assert wrapped.__qualname__.startswith("acknowledge_at_once")


def test_a_client_without_the_expected_internals_is_left_alone() -> None:
    class NotAiomqtt:
        pass

    assert tcp.acknowledge_at_once(NotAiomqtt()) is False  # type: ignore[arg-type]


async def test_only_the_client_it_is_given_is_changed() -> None:
    tuned, plain = aiomqtt.Client("127.0.0.1", 1883), aiomqtt.Client("127.0.0.1", 1883)
    assert tcp.acknowledge_at_once(tuned) is (sys.platform == "linux")
    assert plain._client.loop_read.__qualname__ == "Client.loop_read"
