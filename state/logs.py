"""Structured logs: one JSON object per line, carrying the request id and the Celery task id.

Light on purpose (stdlib and Celery): the backend uses :class:`JsonFormatter` too, so the logs of
the whole stack have one shape. A backend request's id travels to the workers inside the task's
payload (``PredictRequest.request_id``, the publish job's ``request_id``), and
:class:`TaskContextFilter` puts it back on every record a task logs, next to the task's own id:
``jq 'select(.request_id == "4f2a...")'`` over the backend's and the workers' logs gives one
request's whole story.

A JSON line::

    {"ts": "2026-03-02T10:15:04.125+00:00", "level": "INFO", "logger": "workers.pipeline",
     "process": 4121, "message": "predict 4f2a...: 32 images (30 cached, 0 failed), 5 labels, version ...",
     "request_id": "4f2a...", "task_id": "8c1e...", "task_name": "assistant.predict"}

Logging is configured only by entry points (``assistant worker``, ``assistant serve``), never at
import.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

from celery import current_task

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "TaskContextFilter", "configure_logging"]

#: Record attributes copied into the JSON object when a filter set them.
CONTEXT_FIELDS = ("request_id", "task_id", "task_name")
# What the backend's RequestIdFilter writes outside a request.
_NO_ID = "-"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, process, message, context ids, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (never raises on odd arguments: the message is formatted first)."""
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value not in (None, "", _NO_ID):
                doc[name] = str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def _request_id_of(kwargs: Mapping[str, Any] | None) -> str | None:
    # The model tasks carry it at the top level (PredictRequest.request_id); the backend's publish
    # task inside its job.
    if not kwargs:
        return None
    found = kwargs.get("request_id")
    job = kwargs.get("job")
    if not found and isinstance(job, Mapping):
        found = job.get("request_id")
    return str(found) if found else None


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` and ``task_name`` of the running Celery task, and its ``request_id``.

    A record that already has a request id (the backend's filter ran first) keeps it. Outside a
    task the record is left as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only annotates it."""
        request = getattr(current_task, "request", None)
        task_id = getattr(request, "id", None)
        if task_id is None:
            return True
        record.task_id = task_id
        record.task_name = getattr(current_task, "name", None)
        if getattr(record, "request_id", _NO_ID) in (None, "", _NO_ID):
            request_id = _request_id_of(getattr(request, "kwargs", None))
            if request_id:
                record.request_id = request_id
        return True


def configure_logging(level: str | int = "INFO", *, json_lines: bool = False) -> logging.Handler:
    """Log to stderr, with task context; for entry points only (``assistant worker``).

    Args:
        level: The root level.
        json_lines: One JSON object per line (:class:`JsonFormatter`) instead of text.

    Returns:
        The handler installed on the root logger (replacing any other).
    """
    handler = logging.StreamHandler()
    handler.addFilter(TaskContextFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler], force=True)
    return handler
