"""Request ids in log records, and the backend's logging set-up (called by entry points only).

Every request gets an id (the caller's ``X-Request-ID`` when it is a short token, else a new one);
it is answered in the ``X-Request-ID`` header and in error bodies, and :class:`RequestIdFilter`
puts it on every log record emitted while the request is handled, so one grep finds the request's
whole story, including what the worker logged for its chunks (the id travels in
``PredictRequest.request_id``).
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from state.logs import JsonFormatter

__all__ = ["REQUEST_ID_HEADER", "RequestIdFilter", "configure_logging", "new_request_id", "request_id_var"]

REQUEST_ID_HEADER = "x-request-id"
#: The id of the request being handled ("-" outside requests).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_request_id(incoming: str | None = None) -> str:
    """The caller's id when it is a safe short token (it ends up in logs), else a fresh one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex[:16]


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only annotates it."""
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str | int = "INFO", *, json_lines: bool = False) -> None:
    """Log to stderr with request ids. For entry points only (``backends.main``, ``assistant serve``).

    Args:
        level: The root level.
        json_lines: One JSON object per line (``ASSISTANT_LOG_FORMAT=json``), the workers' shape.
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
