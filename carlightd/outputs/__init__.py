"""Outputs: where each cycle's report goes (MQTT today; the scan-tool face next). One failing output
never stops the cycle or another output."""
