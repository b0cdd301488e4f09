"""`assistant serve`: run the Label Studio ML backend (FastAPI under uvicorn).

The web process never imports torch: predictions run on the workers (`assistant worker`), so
start at least one worker on the same broker. Connect the backend in Label Studio under
Settings > Model with this URL (a name Label Studio can reach, e.g. the compose service name).

Examples:
    assistant serve                                   # 127.0.0.1:9090
    assistant serve --host 0.0.0.0 --port 9090        # reachable from other containers
    assistant serve --workers 2                       # two web processes
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: ASSISTANT_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port (default: ASSISTANT_PORT, 9090).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Web processes (uvicorn workers).")] = 1,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: ASSISTANT_LOG_LEVEL, INFO)."),
    ] = None,
) -> None:
    """Serve the ML backend that Label Studio connects to (/health, /setup, /predict, /webhook, ...)."""
    import uvicorn

    from backends.settings import get_backend_settings

    if log_level:
        # The web processes build their app (and logging) from the environment, also when
        # uvicorn spawns several: pass the level the same way.
        os.environ["ASSISTANT_LOG_LEVEL"] = log_level.upper()
    try:
        settings = get_backend_settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad ASSISTANT_* value
        typer.echo(f"Error: invalid settings: {exc}", err=True)
        raise typer.Exit(code=1) from None
    uvicorn.run(
        "backends.main:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # Our own access log (backends.middleware) leaves out query strings, where a webhook
        # token may sit; uvicorn's would print them.
        access_log=False,
        # Label Studio's requests carry no forwarded headers we trust.
        proxy_headers=False,
        server_header=False,
    )
