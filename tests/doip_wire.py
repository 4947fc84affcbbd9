"""DoIP on the wire, for tests that talk to the node with bare sockets: framing, and a check that
whatever came back is a sequence of messages a DoIP node may send (ISO 13400-2)."""

from __future__ import annotations

import struct

# The generic header, from the standard rather than from the code under test: version, inverse
# version, payload type, payload length.
HEADER = struct.Struct("!BBHL")

# What a node sends: NACK, announcement, routing activation, alive check (request and response),
# entity status, power mode, diagnostic message, its ACK and NACK.
NODE_PAYLOAD_TYPES = {
    0x0000, 0x0004, 0x0006, 0x0007, 0x0008, 0x4002, 0x4004, 0x8001, 0x8002, 0x8003
}  # fmt: skip


def frame(payload_type: int, payload: bytes = b"", version: int = 2) -> bytes:
    return HEADER.pack(version, version ^ 0xFF, payload_type, len(payload)) + payload


def well_formed_replies(data: bytes) -> bool:
    """Whatever the node sent back parses as a sequence of DoIP messages it may send."""
    while data:
        if len(data) < HEADER.size:
            return False
        version, inverse, payload_type, length = HEADER.unpack_from(data)
        if version not in (2, 3) or inverse != version ^ 0xFF:
            return False
        if payload_type not in NODE_PAYLOAD_TYPES or len(data) < HEADER.size + length:
            return False
        data = data[HEADER.size + length :]
    return True
