# Read the car like an OBD-II app does, through the ELM327 interface, with python-OBD.
# pip install obd
import sys

import obd

PORT = next((int(a) for a in sys.argv[1:] if a.isdigit()), 35000)  # [scan_tool] elm327_port
car = obd.OBD(f"socket://127.0.0.1:{PORT}", fast=False)  # or the pseudo-terminal's /dev/pts/N
print(car.status(), "protocol", car.protocol_name())
print("VIN", car.query(obd.commands.VIN).value)
print("engine speed", car.query(obd.commands.RPM).value)
print("control module voltage", car.query(obd.commands.CONTROL_MODULE_VOLTAGE).value)
print("adapter voltage", car.query(obd.commands.ELM_VOLTAGE).value)  # AT RV
status = car.query(obd.commands.STATUS).value
print("check-engine lamp", "on" if status.MIL else "off", "with", status.DTC_count, "codes")
for code, description in car.query(obd.commands.GET_DTC).value:  # mode 03: emission-related
    print("stored", code, description)
for code, description in car.query(obd.commands.GET_CURRENT_DTC).value:  # mode 07: pending
    print("pending", code, description)
if "--clear" in sys.argv:
    car.query(obd.commands.CLEAR_DTC)  # mode 04
    print("codes cleared")
car.close()
