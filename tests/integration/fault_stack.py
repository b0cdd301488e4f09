"""Real processes for the fault tests and the pre-annotation soak: a private Redis, workers, the backend, the CLI.

- :class:`PrivateRedis`: a ``redis-server`` of our own on a free loopback port, started as
  ``.ci/run`` starts the shared one (no RDB, no AOF: a restart loses every key, as a Redis
  without persistence does in production). Tests restart it at will without touching the
  shared Redis other people's tests use.
- :class:`Process`, :func:`wait_for`, :func:`assistant_env` and :func:`assistant` (from
  :mod:`tests.integration.processes`, re-exported for the fault tests): a subprocess
  in its own process group, a wait with the logs, the environment and command line of a real
  ``assistant worker`` / ``assistant serve`` / ``assistant preannotate``.
- :func:`predictions_by_task`: what Label Studio holds, per task, for one model version.
- :class:`HoldingProxy`: a loopback HTTP proxy in front of Label Studio that can hold Label
  Studio's answer to a bulk prediction import after Label Studio has stored it: the worker is then
  SIGKILLed in the one window where a prediction is in Label Studio but its message not yet
  acknowledged.
- :func:`fault_stack`: all of it around a running Label Studio: a private Redis, a tiny
  checkpoint, images behind a loopback HTTP server (with a delay knob), workers, the backend and
  CLI runs on demand; every process it started is stopped on exit, even when a test fails.

Nothing here imports torch at import time; the tiny checkpoint comes from ``tests.workers._helpers``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.integration.ls_harness import LSClient, LSServer
from tests.integration.processes import Process, assistant, assistant_env, free_port, healthy, wait_for
from tests.workers._helpers import ImageServer, save_tiny_checkpoint, write_images

__all__ = [
    "BASE_VERSION",
    "CONFIG",
    "FaultStack",
    "HoldingProxy",
    "PrivateRedis",
    "Process",
    "assistant",
    "assistant_env",
    "fault_stack",
    "free_port",
    "predictions_by_task",
    "publish_reports",
    "summary_figures",
    "wait_for",
]

#: The registry version of the stack's tiny checkpoint (the project's current version).
BASE_VERSION = "faults-tiny-v1"
#: model_threshold="0" gives every task a non-empty prediction with a random tiny model.
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" model_threshold="0" model_max_tags="2">
    <Choice value="cat"/>
    <Choice value="dog"/>
    <Choice value="snow"/>
  </Choices>
</View>"""
START_TIMEOUT_S = 120.0

# A Redis on 2 loaded cores answers PING within a second of its start.
_REDIS_START_TIMEOUT_S = 20.0


class PrivateRedis:
    """A ``redis-server`` of our own on a loopback port, without persistence.

    Args:
        workdir: Its working directory and log.
        port: The port (a free one by default); a restart reuses it.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server; see .ci/run)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.restarts = 0
        self.process: Process | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        """Start the server and wait for PING."""
        cmd = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = Process("redis", cmd, {"PATH": os.environ.get("PATH", "/usr/bin")}, self.workdir / "redis.log")
        wait_for(f"redis-server on port {self.port}", self.ping, _REDIS_START_TIMEOUT_S, self.process, interval=0.05)
        return self

    def ping(self) -> bool:
        """Whether the server answers PING."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down (SIGTERM: without persistence it saves nothing, every key is gone)."""
        if self.process is not None:
            self.process.stop()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port, empty."""
        self.stop()
        time.sleep(down_s)
        self.start()
        self.restarts += 1


class HoldingProxy:
    """A loopback HTTP proxy to Label Studio that can hold the answers to bulk prediction imports.

    While :attr:`hold` is set, a ``POST .../import/predictions`` is forwarded to Label Studio (which
    stores the predictions), then :attr:`stored` is set and the answer waits until
    :meth:`release` (or 60 s). Everything else passes straight through.

    Args:
        upstream: Label Studio's base URL.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold = threading.Event()
        self.stored = threading.Event()
        self._released = threading.Event()
        self._http = httpx.Client(base_url=self.upstream, timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ls-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL (give it to the workers as Label Studio's)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HoldingProxy:
        self._thread.start()
        return self

    def release(self) -> None:
        """Let held answers go (to whoever still listens) and stop holding new ones."""
        self.hold.clear()
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._http.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = proxy._http.request(self.command, self.path, content=body, headers=headers)
                if self.command == "POST" and "/import/predictions" in self.path and proxy.hold.is_set():
                    proxy.stored.set()
                    proxy._released.wait(60)
                payload = answer.content
                try:
                    self.send_response(answer.status_code)
                    for key, value in answer.headers.items():
                        if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller died meanwhile (the point of holding)

            do_GET = _forward
            do_POST = _forward
            do_PATCH = _forward
            do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
                pass

        return Handler


def predictions_by_task(ls: LSClient, project: int, version: str) -> dict[int, int]:
    """Task id → how many predictions Label Studio holds for it with ``model_version == version``."""
    counts: dict[int, int] = {}
    for pred in ls.predictions(project=project):
        if pred["model_version"] == version:
            counts[int(pred["task"])] = counts.get(int(pred["task"]), 0) + 1
    return counts


_REPORT = re.compile(r"job (\S+) chunk (\d+): posted (\d+), replaced (\d+), skipped (\d+), failed (\d+)")


def publish_reports(log: str) -> list[dict[str, Any]]:
    """The publish task's summary lines in a worker log: job, chunk, posted, replaced, skipped, failed."""
    return [
        {
            "job": m[1],
            "chunk": int(m[2]),
            "posted": int(m[3]),
            "replaced": int(m[4]),
            "skipped": int(m[5]),
            "failed": int(m[6]),
        }
        for m in _REPORT.finditer(log)
    ]


def summary_figures(output: str) -> dict[str, int]:
    """The figures of ``assistant preannotate``'s summary table (``Predicted``, ``Failed``, ...).

    Raises:
        AssertionError: A row is missing (the command did not get to its summary).
    """
    found = {}
    for label in ("Predicted", "Skipped: already predicted", "Skipped: in flight (another run)", "Failed"):
        match = re.search(rf"{re.escape(label)}\s*│\s*(\d+)", output)
        assert match is not None, f"no {label!r} in the summary:\n{output}"
        found[label] = int(match[1])
    return found


@dataclass
class FaultStack:
    """A test's processes around a running Label Studio (see :func:`fault_stack`)."""

    ls: LSClient
    server: LSServer
    redis: PrivateRedis
    images: ImageServer
    root: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    @property
    def version(self) -> str:
        """The full model version every prediction of :data:`CONFIG` gets (what ``/setup`` answers)."""
        from studio.config import parse_label_config

        return parse_label_config(CONFIG).model_version(BASE_VERSION)

    def start_worker(self, name: str, **extra: str) -> Process:
        """A real ``assistant worker -Q predict``, ready; ``extra`` are more settings (no prefix)."""
        env = {**self.env, **{f"ASSISTANT_{k.upper()}": v for k, v in extra.items()}}
        worker = Process(name, assistant("worker", "-Q", "predict", "-n", f"{name}@%h"), env, self.root / f"{name}.log")
        self.processes.append(worker)
        wait_for(f"{name} to be ready", lambda: " ready." in worker.text(), START_TIMEOUT_S, worker)
        return worker

    def start_backend(self) -> tuple[Process, str]:
        """A real ``assistant serve`` on a free loopback port, answering ``/health``; and its URL."""
        port = free_port()
        cmd = assistant("serve", "--host", "127.0.0.1", "--port", str(port))
        backend = Process("backend", cmd, self.env, self.root / "backend.log")
        self.processes.append(backend)
        url = f"http://127.0.0.1:{port}"
        wait_for("the backend's /health", lambda: healthy(url), START_TIMEOUT_S, backend)
        return backend, url

    def cli(self, name: str, *args: str) -> Process:
        """Start ``assistant <args>`` in the background (its output in ``<root>/<name>.log``)."""
        proc = Process(name, assistant(*args), self.env, self.root / f"{name}.log")
        self.processes.append(proc)
        return proc

    def create_project(self, names: list[str]) -> tuple[int, list[int]]:
        """A project of :data:`CONFIG` with one task per image name (served by :attr:`images`)."""
        from label_studio_sdk.types import ImportApiRequest

        project = self.ls.create_project(CONFIG)
        tasks = [ImportApiRequest(data={"image": f"{self.images.url}/{name}"}) for name in names]
        answer = self.ls.sdk.projects.import_tasks(id=project, request=tasks, return_task_ids=True)
        ids = list(getattr(answer, "task_ids", None) or [])
        assert len(ids) == len(names), answer
        return project, ids

    def stop(self) -> None:
        """Stop every process this stack started (newest first)."""
        for proc in reversed(self.processes):
            proc.stop()


@contextlib.contextmanager
def fault_stack(server: LSServer, ls: LSClient, root: Path, *, images: int, **settings: str) -> Iterator[FaultStack]:
    """A private Redis, a tiny checkpoint and ``images`` PNGs served on loopback, around ``server``.

    Args:
        server: The running Label Studio.
        ls: A client of it.
        root: An empty scratch directory.
        images: How many images to write (``img000.png``, ...).
        **settings: More ``ASSISTANT_*`` settings for every process (names without the prefix).
    """
    try:
        redis_server = PrivateRedis(root / "redis").start()
    except FileNotFoundError as exc:
        import pytest

        pytest.skip(str(exc))
    base = save_tiny_checkpoint(root / "base-model", BASE_VERSION)
    write_images(root / "images", images)
    image_server = ImageServer(root / "images").start()
    env = assistant_env(
        home=root / "home",
        base_model=base,
        broker_url=redis_server.url(0),
        prefix=f"faults-{uuid.uuid4().hex[:8]}:",
        ls_url=server.url,
        ls_key=server.api_key,
        media_allowed_hosts='["127.0.0.1"]',
        media_retries="0",
        batch_size="8",
        **settings,
    )
    stack = FaultStack(ls, server, redis_server, image_server, root, env)
    try:
        yield stack
    finally:
        stack.stop()
        image_server.stop()
        redis_server.stop()
