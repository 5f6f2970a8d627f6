"""Log lines: one JSON object per line for machines, readable text on a terminal.

A line names the upload and the job it is about in fields of its own (``upload_id``,
``job_id``), so a log store can find every line of one job across the upload function, the
bridge and the resize function. Code sets them for a stretch of work with ``context`` (every
line logged inside it, on that thread, carries them), or for one line with ``extra=``.

The JSON keys are those of Lambda's own JSON log format (``timestamp``, ``level``, ``message``,
``logger``, ``errorType``, ``errorMessage``, ``stackTrace``, then the fields), so one query reads
the bridge's lines and the functions' alike.

Logging is configured only in entry points, with ``configure``: the bridge's main and its worker
processes, the functions' modules (a Lambda handler's module level is its entry point), the
``imagepipe`` command. Everything else logs through ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Iterator, TextIO

# The fields that say what a line is about (``context`` and ``extra=`` accept any name; these
# are the ones a terminal shows too).
UPLOAD_ID = "upload_id"
JOB_ID = "job_id"
IDENTIFYING = (UPLOAD_ID, JOB_ID)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("imagepipe_log_fields",
                                                                 default={})
# What every LogRecord has; anything else on a record is a field (from ``extra=`` or context).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


@contextlib.contextmanager
def context(**fields) -> Iterator[None]:
    """Put ``fields`` (None values left out) on every line logged inside the block, nested
    blocks adding to the outer ones. It follows the thread (a ``contextvars`` context): set it
    in the thread that does the work."""
    token = _context.set({**_context.get(),
                          **{name: value for name, value in fields.items() if value is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def fields(record: logging.LogRecord) -> dict:
    """The fields of ``record``: its ``extra=`` values and the context's, in that order."""
    return {name: value for name, value in vars(record).items() if name not in _STANDARD}


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record a handler gets. A filter on the handler,
    not a record factory: a record factory's attributes would collide with ``extra=``, and a
    handler sees the lines of every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):  # an explicit extra= wins
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": _utc(record.created),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            **fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            kind, error, trace = record.exc_info
            line["errorType"] = kind.__name__
            line["errorMessage"] = str(error)
            line["stackTrace"] = traceback.format_tb(trace)
        if record.stack_info:
            line["stackInfo"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, then the upload and job ids where the message does not show them (the
    other fields are for machines; the message says them in words)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        shown = [f"{name}={getattr(record, name)}" for name in IDENTIFYING
                 if hasattr(record, name) and str(getattr(record, name)) not in record.message]
        return f"{text} [{' '.join(shown)}]" if shown else text


def formatter_for(stream: TextIO) -> logging.Formatter:
    """Text for a person at a terminal, JSON lines for everything else (a pipe, a file, a log
    driver)."""
    isatty = getattr(stream, "isatty", None)
    return TextFormatter() if isatty is not None and isatty() else JsonFormatter()


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Set up the root logger for an entry point; call it once, at start.

    When a runtime has set up logging already (AWS Lambda's, whose JSON format also writes a
    record's fields), its handlers stay and only learn the context's fields. Otherwise one
    handler on ``stream`` (stderr) writes text or JSON lines (``formatter_for``), from ``level``.
    """
    root = logging.getLogger()
    if not root.handlers:
        ours = logging.StreamHandler(stream or sys.stderr)
        ours.setFormatter(formatter_for(ours.stream))
        root.addHandler(ours)
        root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
    # pika logs every connection step at INFO; the bridge logs what matters itself.
    logging.getLogger("pika").setLevel(max(level, logging.WARNING))


def _utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
