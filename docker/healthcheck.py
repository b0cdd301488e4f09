"""Container healthchecks of compose.yaml (the images copy the repository to /app).

    python /app/docker/healthcheck.py http http://127.0.0.1:9090/health   # the backend answers
    python /app/docker/healthcheck.py celery gpu                          # worker gpu@<this host> answers

The Celery check pings this container's own node (``--hostname gpu@%h`` expands ``%h`` to the
container's host name), so with ``--scale worker-gpu=3`` each replica checks itself. A prefork
worker's main process answers even while its child runs a long round; a solo-pool worker busy with
a task could not, which is why the compose workers use the prefork pool. Exit status 0 when
healthy, 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import socket
import sys
import urllib.request

# Docker kills the check after its own timeout (compose.yaml); answer well before that.
TIMEOUT_S = 5.0


def check_http(url: str) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_celery(node_prefix: str) -> str | None:
    """None when the worker ``<node_prefix>@<this host>`` answers a ping, else why not."""
    from state.settings import get_settings
    from workers.celery_app import make_celery

    node = f"{node_prefix}@{socket.gethostname()}"
    app = make_celery(get_settings(), include=())
    try:
        replies = app.control.ping(destination=[node], timeout=TIMEOUT_S)
    except Exception as exc:  # the broker is down: unhealthy, with the reason
        return f"cannot reach the broker: {type(exc).__name__}: {exc}"
    finally:
        app.close()
    return None if any(node in reply for reply in replies) else f"worker {node} did not answer a ping"


def main(argv: list[str]) -> int:
    """Entry point: ``http URL`` or ``celery NODE_PREFIX``."""
    if len(argv) != 2 or argv[0] not in ("http", "celery"):
        sys.stderr.write("usage: healthcheck.py http URL | celery NODE_PREFIX\n")
        return 2
    problem = check_http(argv[1]) if argv[0] == "http" else check_celery(argv[1])
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
