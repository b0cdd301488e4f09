"""The CLI's one error boundary: an error a user can act on becomes a message and exit code 1.

Every command runs inside :func:`error_boundary` (the root group's ``invoke``), so no command
catches these itself:

- any :class:`errors.AssistantError` (the core's, the workers', the backend's, the ledger's, the
  decision log's): its what / why / fix;
- a broker or database that cannot be reached (``redis`` and ``kombu`` connection errors,
  ``psycopg.OperationalError``) and a failed HTTP request (``httpx.HTTPError``): what could not be
  reached and how to fix it.

Anything else is a bug and keeps its traceback. ``assistant -v`` logs the traceback of the
handled ones too, at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer

from errors import AssistantError

__all__ = ["EXIT_ERROR", "error_boundary", "failure_of"]

logger = logging.getLogger(__name__)

#: The exit code of a handled error (click uses 2 for usage errors).
EXIT_ERROR = 1


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Turn a handled error (see the module docstring) into ``Error: ...`` on stderr and exit 1."""
    try:
        yield
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        logger.debug("handled error", exc_info=True)
        typer.echo(f"Error: {failure.message}", err=True)
        raise typer.Exit(code=EXIT_ERROR) from None


def failure_of(exc: BaseException) -> AssistantError | None:
    """``exc`` as a what / why / fix error when the boundary handles it, else None.

    The libraries are imported here, on the error path only, so that a command that never
    touches Redis or HTTP does not pay for importing them.
    """
    if isinstance(exc, AssistantError):
        return exc
    import httpx
    import kombu.exceptions
    import redis.exceptions

    if isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | kombu.exceptions.OperationalError
    ):
        return AssistantError(
            "cannot reach Redis (the task broker and the shared state)",
            why=str(exc),
            fix="start Redis, or point ASSISTANT_BROKER_URL at it (e.g. redis://127.0.0.1:6379/0), "
            "then run the command again",
        )
    if isinstance(exc, httpx.HTTPError):
        return AssistantError(
            f"an HTTP request{_url_of(exc)} failed",
            why=str(exc) or type(exc).__doc__,
            fix="check that the server runs and that its URL (ASSISTANT_LABEL_STUDIO_URL for Label Studio) "
            "is right, then run the command again",
        )
    with contextlib.suppress(ImportError):
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return AssistantError(
                "cannot reach the PostgreSQL database",
                why=str(exc).strip(),
                fix="start the database, or correct ASSISTANT_LEDGER_URL / ASSISTANT_AGENT_LOG_URL",
            )
    return None


def _url_of(exc: BaseException) -> str:
    # An HTTPError made outside a request (a bad URL) has no request to name.
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return ""
    url = request.url
    return f" to {url.scheme}://{url.host}{'' if url.port is None else f':{url.port}'}{url.path}"
