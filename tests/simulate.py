"""The tests' name for the workbench (`carlightd.tools.workbench`): the pure core driven
synchronously, without a loop."""

from carlightd.tools.workbench import T0, Bench, read_now, settings

__all__ = ["T0", "Bench", "read_now", "settings"]
