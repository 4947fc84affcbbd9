"""Sources of readings: the simulated car today, real signals later. A source knows nothing of
diagnosis."""
