"""Consumers of a running daemon over MQTT (client commands, terminal view, web dashboard); they
trust nothing they receive."""
