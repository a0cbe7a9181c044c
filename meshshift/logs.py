"""structlog setup: JSON lines in the daemon, readable lines in the CLI."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, Literal

import orjson
import structlog

LogFormat = Literal["json", "console"]


def _json_line(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """One log line's JSON, by orjson: at a thousand rollouts the daemon writes thousands a second.
    `default` is structlog's fallback (repr) for values JSON cannot hold."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, say: the standard library writes it
        return json.dumps(value, default=default)


def configure_logging(fmt: LogFormat = "json", level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (aiohttp, kubernetes_asyncio) follow suit.
    logging.basicConfig(
        level=numeric if isinstance(numeric, int) else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
