"""Logging: structlog, JSON lines when not on a terminal, a readable console on one.

Standard-library loggers (aiomqtt's, asyncio's) go through the same formatter, so one stream
carries every line in one format.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager

import structlog
from structlog.typing import Processor


def configure(*, json: bool | None = None, level: str = "INFO") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later configure (a test, `capture_logs`) reaches every logger already used.
        # Log lines are rare (transitions, connection changes), so the cost does not show.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _identity(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event_dict


def bind_vehicle(vehicle: str) -> None:
    """Every later line of the current task, and of the tasks it then creates, names the vehicle.

    Call it first thing in a daemon's own task: asyncio tasks copy the context when they are
    created, so in a fleet (many daemons, one event loop) each car's lines name that car only."""
    structlog.contextvars.bind_contextvars(vehicle=vehicle)


def vehicle_bound(vehicle: str) -> AbstractContextManager[None]:
    """The vehicle named in every line written inside the `with`, and no longer after it."""
    return structlog.contextvars.bound_contextvars(vehicle=vehicle)


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
