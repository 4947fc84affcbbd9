"""The MQTT output: the publisher that owns the broker connection, commands, Home Assistant
discovery."""
