"""Structured logs: ``key=value`` text or one JSON object per line.

A homemonitor log call names an event and gives its data as fields::

    log = logs.get_logger(__name__)
    log.info("quarantined", count=2, reasons=["implausible"])

The standard library's logging stays the transport: uvicorn, asyncpg and aiomqtt log through
it, and so do our records. :func:`configure` gives it one handler whose structlog chain renders
both alike, with ``timestamp``, ``level``, ``logger`` and ``event`` beside the event's fields.
Fields are message, device and gateway references, counts, reasons and SQLSTATEs, never patient
ids or values.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

#: The levels ``configure`` takes (HOMEMONITOR_LOG_LEVEL; any case in the environment).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
#: How lines look (HOMEMONITOR_LOG_FORMAT): a person reads text, a collector reads JSON.
LogFormat = Literal["text", "json"]

#: What every record gets, ours when it is logged and other libraries' when it is rendered.
_SHARED: tuple[Processor, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)

_FIRST = ("timestamp", "level", "logger", "event")


class _Event(dict[str, Any]):
    """An event as the message of a stdlib record: its fields for :class:`ProcessorFormatter`,
    ``event key=value ...`` for any other formatter (stdlib's last resort, pytest's report).
    """

    def __str__(self) -> str:
        fields = "".join(f" {key}={value}" for key, value in self.items() if key not in _FIRST)
        return f"{self.get('event', '')}{fields}"


def _to_stdlib(logger: WrappedLogger, name: str, event_dict: EventDict) -> Any:
    return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, name, _Event(event_dict))


#: Ours: dropped early below the logger's level, then handed to stdlib with the fields intact.
_OWN: tuple[Processor, ...] = (
    structlog.stdlib.filter_by_level,
    *_SHARED,
    structlog.processors.StackInfoRenderer(),
    _to_stdlib,
)


def _first_the_envelope(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, logger and event before the event's own fields."""
    head: dict[str, Any] = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
    head.update(event_dict)
    return head


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The logger of module ``name``; its records reach stdlib logging with their fields.

    The chain is given here, not by ``structlog.configure``: records go to stdlib logging
    whether or not :func:`configure` ran (the service in a test's event loop, commands that
    configure nothing), and importing a module configures nothing.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=list(_OWN),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger


def formatter(fmt: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """Render any record, ours or another library's, as ``fmt``."""
    render: list[Processor]
    if fmt == "json":
        render = [
            structlog.processors.format_exc_info,
            _first_the_envelope,
            structlog.processors.JSONRenderer(),
        ]
    else:
        render = [
            structlog.dev.ConsoleRenderer(
                colors=False, sort_keys=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )


def configure(fmt: LogFormat = "text", level: LogLevel = "INFO") -> None:
    """Send logs to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mqtt", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
