"""A workshop tester in a process of its own: udsoncan over can-isotp on a python-can bus.

    python tests/isotp_client.py GROUP PORT OPERATION...

OPERATION is `vin` (0x22 F190), `dtcs` (0x19 02, every status bit), `clear` (0x14 FFFFFF) or
`write_vin` (0x2E F190, a multi-frame request). Prints one JSON list of [operation, result].
"""

from __future__ import annotations

import json
import sys
from typing import Any

import can
import isotp
import udsoncan
from udsoncan.client import Client
from udsoncan.connections import PythonIsoTpConnection

REQUEST_ID = 0x7E0
RESPONSE_ID = 0x7E8


def run(client: Client, operation: str) -> Any:
    if operation == "vin":
        return client.read_data_by_identifier(0xF190).service_data.values[0xF190]
    if operation == "dtcs":
        response = client.get_dtc_by_status_mask(0xFF)
        assert response is not None
        return [[dtc.id, dtc.status.get_byte_as_int()] for dtc in response.service_data.dtcs]
    if operation == "clear":
        return client.clear_dtc(0xFFFFFF).positive
    if operation == "write_vin":
        return client.write_data_by_identifier(0xF190, "WCARLIGHT0D000042").positive
    raise SystemExit(f"unknown operation {operation!r}")


def main(group: str, port: str, *operations: str) -> None:
    config = udsoncan.configs.default_client_config.copy()
    config["data_identifiers"] = {0xF190: udsoncan.AsciiCodec(17)}
    bus = can.Bus(interface="udp_multicast", channel=group, port=int(port))
    notifier = can.Notifier(bus, [], timeout=0.1)
    try:
        stack = isotp.NotifierBasedCanStack(
            bus,
            notifier,
            address=isotp.Address(
                isotp.AddressingMode.Normal_11bits, rxid=RESPONSE_ID, txid=REQUEST_ID
            ),
            params={"tx_padding": 0xCC},
        )
        with Client(PythonIsoTpConnection(stack), config=config, request_timeout=5) as client:
            results = [[operation, run(client, operation)] for operation in operations]
        print(json.dumps(results))
    finally:
        notifier.stop()
        bus.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
