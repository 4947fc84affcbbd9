"""The simulated car: physics, drive profile, sensor noise, injected failures."""
