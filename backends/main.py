"""ASGI entry point of the ML backend: logging, then ``create_app`` with the environment's settings.

Nothing happens at import (the app is built on first use), so importing this module neither
reads the environment nor opens the ledger::

    uvicorn --factory backends.main:app_factory --host 127.0.0.1 --port 9090   # what `assistant serve` runs
    uvicorn backends.main:app --host 127.0.0.1 --port 9090                     # also works (lazy attribute)
"""

from __future__ import annotations

import functools
import logging

from fastapi import FastAPI

from backends.app import create_app
from backends.logs import configure_logging
from backends.settings import get_backend_settings

__all__ = ["app_factory"]

logger = logging.getLogger(__name__)


@functools.cache
def app_factory() -> FastAPI:
    """Configure logging and build the app from ``ASSISTANT_*`` (once per process)."""
    settings = get_backend_settings()
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    app = create_app(settings)
    auth = "basic" if settings.basic_auth_enabled else "off"
    webhook = "token" if settings.webhook_token is not None else auth
    logger.info(
        "ML backend ready: Label Studio %s, broker %s, auth %s, webhook auth %s, inline budget %.0f s",
        settings.label_studio_url,
        settings.broker_url.split("@")[-1],  # never the broker password
        auth,
        webhook,
        settings.predict_inline_budget_s,
    )
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn backends.main:app` reads the attribute: build the app then, not at import.
    if name == "app":
        return app_factory()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
