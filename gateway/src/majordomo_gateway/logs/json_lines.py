"""``log.format: json``: every log record as one JSON object on one line, uvicorn's included.

A record's ``fields`` extra (a dict) becomes top-level keys: the access log's request id, status,
tokens and cost, and with tracing on the trace and span ids, so a log line finds its trace.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure", "uvicorn_log_config"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, log_format: str) -> None:
    """The root logger's handler: text lines, or JSON lines."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's own loggers in JSON too (None: uvicorn's default, readable lines)."""
    if log_format != "json":
        return None
    formatter = {"()": f"{__name__}.JsonFormatter"}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"json": handler},
        "loggers": {name: {"handlers": ["json"], "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
