"""The composition root: configuration, assembling the daemon, the cycle loop, signals, reload,
systemd and health."""
