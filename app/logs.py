"""Logging set-up: text or one JSON object per line, request ids included.

Utterances are user messages and private: nothing logs them at INFO level.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_EXTRA_KEYS = ("request_id", "status", "route", "job_id", "version")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line


def configure(level: str = "info", fmt: str = "text") -> None:
    # Neither format shows the caller's file and line, thread or process, so the
    # record need not collect them (the logging HOWTO's "Optimization" list):
    # the stack walk for the caller alone was a third of an access line's cost.
    # Process-wide, as these switches are: `stack_info=True` then prints nothing.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("intently")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = [handler]
        logging.getLogger(name).propagate = False
        # At our level: uvicorn says "Uvicorn running on http://HOST:PORT" once the app is ready.
        logging.getLogger(name).setLevel(level.upper())
    # Our access line carries the request id; uvicorn's own would only repeat it.
    logging.getLogger("uvicorn.access").disabled = True
