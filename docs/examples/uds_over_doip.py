# Read the car's fault memory and live values with udsoncan over DoIP, then clear it.
# pip install udsoncan doipclient
import sys
from datetime import UTC, datetime

import udsoncan
from doipclient import DoIPClient
from doipclient.connectors import DoIPClientUDSConnector
from udsoncan.client import Client

PORT = next((int(a) for a in sys.argv[1:] if a.isdigit()), 13400)  # [scan_tool] doip_port
config = dict(udsoncan.configs.default_client_config)
config.update(
    {
        "dtc_snapshot_did_size": 2,
        "extended_data_size": 1,  # every extended data record is one byte
        "data_identifiers": {
            0xF190: udsoncan.AsciiCodec(17),  # VIN
            0x0101: ">H",  # bus voltage, mV
            0x0102: "B",  # battery state of charge, %
            0x0103: ">H",  # engine speed, rpm
            0x0104: "B",  # battery temperature, °C + 40
            0x0105: "B",  # ignition: 0 off, 1 on, 2 run
            0x0106: ">L",  # when the freeze frame was taken, s since 1970-01-01 UTC
        },
    }
)
doip = DoIPClient("127.0.0.1", 0x0740, tcp_port=PORT)  # the ECU's logical address
with Client(DoIPClientUDSConnector(doip), config=config) as client:
    values = client.read_data_by_identifier([0xF190, 0x0101, 0x0102, 0x0103]).service_data.values
    print(
        f"VIN {values[0xF190]}, bus {values[0x0101][0] / 1000:.2f} V, "
        f"battery {values[0x0102][0]} %, engine {values[0x0103][0]} rpm"
    )
    for dtc in client.get_dtc_by_status_mask(0xFF).service_data.dtcs:
        print(f"DTC {dtc.id_iso()} status 0x{dtc.status.get_byte_as_int():02X}")
        snapshot = client.get_dtc_snapshot_by_dtc_number(dtc.id, record_number=0x01)
        frame = {s.did: s.data[0] for s in snapshot.service_data.dtcs[0].snapshots}
        if frame:
            taken = datetime.fromtimestamp(frame[0x0106], UTC)
            print(
                f"  freeze frame at {taken:%H:%M:%S}: bus {frame[0x0101] / 1000:.2f} V, "
                f"battery {frame[0x0102]} %, engine {frame[0x0103]} rpm"
            )
        extended = client.get_dtc_extended_data_by_dtc_number(dtc.id, record_number=0xFF)
        records = extended.service_data.dtcs[0].extended_data
        counters = {record.record_number: record.raw_data[0] for record in records}
        print(f"  occurrences {counters[0x01]}, aging counter {counters[0x02]}")
    if "--clear" in sys.argv:
        client.clear_dtc()  # 14 FF FF FF: the same act as the MQTT clear_faults command
        print("fault memory cleared")
doip.close()
