"""The public contract (DESIGN §5): MQTT topics and payload models, shared by the daemon and its
consumers."""
