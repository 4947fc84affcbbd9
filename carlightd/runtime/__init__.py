"""The asyncio and MQTT-connection plumbing that the daemon, the consumers and the tools share:
waiting for an event or a timeout, signal handling at an entry point, and the broker connection
(client, TLS, TCP tuning, backoff). Nothing here knows the car or the contract's payloads."""
