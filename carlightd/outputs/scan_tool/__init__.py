"""The scan-tool face (DESIGN §7): what a workshop tester or an OBD-II app sees of the car.

- `view`: the snapshot every protocol answers from (the latest cycle's fault memory and readings)
  and the one act a scan tool may do to the car (clear the fault memory);
- `uds`: a UDS server (ISO 14229-1), request bytes in, response bytes out, for any transport;
- `doip`, `isotp`: the transports UDS rides on (ISO 13400-2 over TCP, ISO 15765-2 on python-can);
- `elm327`: an ELM327-compatible OBD-II interpreter, served on TCP and on a pseudo-terminal;
- `output`: the output the app builds, which serves the transports the configuration turns on.
"""
