"""carlightd: onboard diagnostics for a simulated car's electrical system, published over MQTT."""

__version__ = "0.1.0"
