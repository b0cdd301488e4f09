"""The outermost layer of every request: request id, body size limit, latency metrics, access log, 500s.

A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` adds a task and a copy per request,
which ``/health`` does not need). It:

- assigns the request id (:mod:`backends.logs`) and answers it in ``X-Request-ID``;
- refuses bodies over ``max_body_bytes`` with 413, from ``Content-Length`` before reading, or
  while reading a body sent without one;
- records latency and status per route template (``/predict``, not the raw path);
- turns any unhandled exception into a 500 ``{"detail", "request_id"}`` (the traceback goes to
  the log only), so that even a 500 carries the request id;
- writes one access-log line per request without the query string: ``/webhook?token=...``
  would otherwise put the webhook secret in the log (uvicorn's own access log is off).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from backends.metrics import BackendMetrics

__all__ = ["BodyTooLarge", "EdgeMiddleware", "error_body"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("backends.access")

# Routes polled often: their access lines go to DEBUG.
_QUIET = frozenset({"/health", "/", "/metrics"})


class BodyTooLarge(HTTPException):
    """The request body exceeds the limit (an HTTPException, so FastAPI's body parsing lets it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body exceeds {limit} bytes. Fix: send fewer tasks per request, "
            "or raise ASSISTANT_MAX_BODY_BYTES",
        )


def error_body(detail: str, request_id: str) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"detail": detail, "request_id": request_id}


class EdgeMiddleware:
    """See the module docstring.

    Args:
        app: The wrapped ASGI app.
        max_body_bytes: Largest accepted body.
        metrics: Where latency and status go.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: BackendMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = new_request_id(headers.get(REQUEST_ID_HEADER))
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        code, responded = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal code, responded
            if message["type"] == "http.response.start":
                code, responded = int(message["status"]), True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        try:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._reply(send_with_id, 413, str(BodyTooLarge(self.max_body_bytes).detail), rid)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not responded:
                detail = f"internal error of the ML backend; its log has the details under request id {rid}"
                await self._reply(send_with_id, 500, detail, rid)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.observe_request(route, method, code, elapsed)
            level = logging.DEBUG if route in _QUIET and code < 400 else logging.INFO
            access_logger.log(level, "%s %s -> %d in %.1f ms", method, scope.get("path"), code, elapsed * 1000)
            request_id_var.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        limit, seen = self.max_body_bytes, [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited

    @staticmethod
    async def _reply(send: Send, code: int, detail: str, rid: str) -> None:
        body = json.dumps(error_body(detail, rid)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
