"""Real Redis + real `assistant worker` processes for the worker integration tests.

Isolation on the shared Redis: database 14 and a key prefix unique to the test session (kombu's
``global_keyprefix``), so queues and results never mix with other people's tests; only our own
keys are deleted at the end. Every worker runs in its own process group and is stopped (SIGTERM,
then SIGKILL) even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from state.settings import Settings
from tests.conftest import REPO_ROOT
from tests.workers._helpers import ImageServer, save_tiny_checkpoint, worker_settings, write_images

REDIS_URL = "redis://127.0.0.1:6379/14"


class WorkerProcess:
    """One `assistant worker` subprocess with its log file."""

    def __init__(self, env: dict[str, str], log: Path, *, hostname: str, queues: str = "predict") -> None:
        self.log = log
        self.hostname = hostname
        cmd = [sys.executable, "-c", "from cli.main import main; main()", "worker", "-Q", queues, "-n", hostname]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.hostname} exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.hostname} not ready after {timeout} s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no acknowledgement."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL if it takes longer than 20 s."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


class WorkerCluster:
    """Shared state of a test: settings, env for workers, the image server, started workers."""

    def __init__(self, root: Path, base_model: Path, server: ImageServer, prefix: str) -> None:
        self.root = root
        self.server = server
        self.prefix = prefix
        overrides: dict[str, Any] = {
            "broker_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "media_allowed_hosts": ["127.0.0.1"],
            "media_retries": 0,
            # Short redelivery for the kill test: tasks here take seconds, far below 5 s of
            # unacknowledged time only when their worker is dead.
            "visibility_timeout_s": 5,
            "broker_transport_options": {"unacked_restore_interval": 1, "unacked_restore_throttle": 1},
        }
        self.settings: Settings = worker_settings(root / "home", base_model, **overrides)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "LABEL_STUDIO_"))}
        self.env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                "ASSISTANT_HOME": str(root / "home"),
                "ASSISTANT_BASE_MODEL": str(base_model),
                "ASSISTANT_BROKER_URL": REDIS_URL,
                "ASSISTANT_REDIS_KEY_PREFIX": prefix,
                "ASSISTANT_DEVICE": "cpu",
                "ASSISTANT_BATCH_SIZE": "4",
                "ASSISTANT_MEDIA_CONCURRENCY": "4",
                "ASSISTANT_MEDIA_RETRIES": "0",
                "ASSISTANT_MEDIA_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
                "ASSISTANT_LABEL_STUDIO_URL": "http://127.0.0.1:9",
                "ASSISTANT_VISIBILITY_TIMEOUT_S": "5",
                "ASSISTANT_BROKER_TRANSPORT_OPTIONS": json.dumps(overrides["broker_transport_options"]),
            }
        )
        self.workers: list[WorkerProcess] = []

    def start_worker(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.root / f"{name}.log", hostname=f"{name}@{uuid.uuid4().hex[:6]}")
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def app(self) -> Any:
        from workers.celery_app import make_celery

        return make_celery(self.settings, include=[])

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


def _redis_or_skip() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return client


@pytest.fixture(scope="session")
def workers_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint every worker of the session serves (version tiny-v1)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("workers-ckpt") / "tiny-v1", "tiny-v1")


@pytest.fixture
def cluster(tmp_path: Path, workers_base_model: Path) -> Iterator[WorkerCluster]:
    """Redis (skips when absent), 24 images behind a local HTTP server, and worker bookkeeping."""
    client = _redis_or_skip()
    prefix = f"assistant-test-{uuid.uuid4().hex[:10]}:"
    write_images(tmp_path / "images", 24)
    server = ImageServer(tmp_path / "images").start()
    cluster = WorkerCluster(tmp_path, workers_base_model, server, prefix)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        server.stop()
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()
