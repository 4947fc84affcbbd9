"""Tools around the daemon: the demo, the fleet load generator, the embedded broker."""
