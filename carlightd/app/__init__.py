"""The composition root: assembling the daemon from the configuration (the one place that knows
every piece), the cycle loop, signals, reload, systemd and health."""
