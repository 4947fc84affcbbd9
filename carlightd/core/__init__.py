"""The pure core: part kinds, self-tests, isolation, the fault memory, the diagnoser and the
schedule. No configuration loader, no asyncio, no network, no files: fed readings, a clock and
specifications, so every rule is unit-tested without a loop, a broker or sleeps."""
