"""carlightd's one error root, and the errors more than one layer raises or catches.

Every error carlightd raises on purpose is a `CarlightdError`, so a caller (a test, an embedding
program, the CLI) can tell ours from a bug. Errors that belong to one module stay there, under
this root.
"""

from __future__ import annotations


class CarlightdError(Exception):
    """The root of every error carlightd raises on purpose."""


class UnknownPartError(CarlightdError, KeyError):
    """A part id the car does not have (a command named it, or a configuration referred to it)."""

    def __init__(self, part_id: str, known: list[str]) -> None:
        self.part_id = part_id
        self.message = f"no component {part_id!r}; known: {', '.join(known)}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message
