"""Fault: Redis restarts in the middle of a bulk pre-annotation run.

A private ``redis-server`` (no persistence, like ``.ci/run``'s) is the broker and the result
backend of a real worker, a real ``assistant serve`` and the ``assistant preannotate`` CLI, with a
real Label Studio. The run is slowed down (every image takes 0.25 s to serve) and Redis is
stopped while the worker is mid-run, kept down 3 s and started again, empty: the queued predict
and publish messages, the results, the in-flight marks are all gone.

What must hold:

- the backend's ``/health`` answers within Label Studio's 1 s while Redis is down, ``/setup``
  still answers, and ``/predict`` fails fast with a clear 503;
- the run accounts for every task: each one ends with exactly one prediction for the version in
  Label Studio, or is reported failed in the summary; none is silently dropped (the CLI notices
  that Redis lost its queue and queues the lost chunks again);
- the worker reconnects by itself and new work succeeds afterwards: a second run finds every task
  predicted, and an inline ``/predict`` from Label Studio (Retrieve Predictions) gets answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.fault_stack import (
    CONFIG,
    FaultStack,
    Process,
    fault_stack,
    predictions_by_task,
    summary_figures,
    wait_for,
)
from tests.integration.ls_harness import LSClient, LSServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_TASKS = 30
CHUNK = 2
IMAGE_DELAY_S = 0.25
REDIS_DOWN_S = 3.0
RUN_TIMEOUT_S = 300.0


@dataclass
class RedisStack:
    stack: FaultStack
    worker: Process
    backend: Process
    backend_url: str

    def setup_version(self, project: int) -> str:
        resp = httpx.post(f"{self.backend_url}/setup", json={"project": project, "schema": CONFIG}, timeout=10)
        resp.raise_for_status()
        version: str = resp.json()["model_version"]
        return version


@pytest.fixture(scope="module")
def stack(ls_server: LSServer, ls_client: LSClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisStack]:
    root = tmp_path_factory.mktemp("faults-redis")
    # One image download at a time, so that the image delay paces the run.
    with fault_stack(ls_server, ls_client, root, images=N_TASKS + 3, media_concurrency="1") as stack:
        worker = stack.start_worker("worker")
        backend, url = stack.start_backend()
        yield RedisStack(stack, worker, backend, url)


def _timed_get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    status = httpx.get(url, timeout=5).status_code
    return status, time.perf_counter() - started


def test_redis_restart_mid_run_loses_no_task(stack: RedisStack) -> None:
    faults = stack.stack
    project, task_ids = faults.create_project([f"img{i:03d}.png" for i in range(N_TASKS)])
    version = stack.setup_version(project)
    assert version == faults.version
    faults.images.delay_s = IMAGE_DELAY_S
    run = faults.cli(
        "preannotate-1", "preannotate", "--project", str(project), "--chunk-size", str(CHUNK),
        "--timeout", str(RUN_TIMEOUT_S),
    )  # fmt: skip
    # A third of the images fetched: the worker is mid-run, most chunks are still queued.
    wait_for("the worker to be mid-run", lambda: faults.images.total_requests() >= N_TASKS // 3, 120, run)
    faults.redis.stop()
    down_at = time.monotonic()

    # Redis is down: /health never touches it, /setup ignores its failed write, /predict is a 503.
    health = [_timed_get(f"{stack.backend_url}/health") for _ in range(10)]
    assert all(status == 200 for status, _ in health) and max(s for _, s in health) < 1.0, health
    assert stack.setup_version(project) == version
    body = {"tasks": [{"id": task_ids[0], "data": {"image": f"{faults.images.url}/img000.png"}}],
            "label_config": CONFIG, "project": f"{project}.1"}  # fmt: skip
    started = time.perf_counter()
    down = httpx.post(f"{stack.backend_url}/predict", json=body, timeout=30)
    assert down.status_code == 503 and "detail" in down.json(), down.text
    assert time.perf_counter() - started < 10

    time.sleep(max(0.0, REDIS_DOWN_S - (time.monotonic() - down_at)))
    faults.redis.start()
    faults.images.delay_s = 0.0
    rc = run.proc.wait(timeout=RUN_TIMEOUT_S + 60)
    output = run.text()
    counts = predictions_by_task(faults.ls, project, version)
    summary = summary_figures(output)

    assert rc == 0, output + stack.worker.text()[-3000:]
    # Nothing duplicated, nothing silently dropped: every task predicted once or reported failed.
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) <= set(task_ids)
    assert len(counts) + summary["Failed"] == N_TASKS, (counts, output)
    # And here nothing needed to fail: the lost chunks were queued again and finished.
    assert len(counts) == N_TASKS, output + stack.worker.text()[-3000:]
    assert "Queued again: Redis lost them" in output, output
    # The worker noticed, reconnected by itself, and carried on (it ran the requeued chunks).
    stack.worker.check_alive()
    log = stack.worker.text()
    assert "Connection to broker lost" in log and "Connected to redis://" in log.split("Connection to broker lost")[-1]

    # The next run plans from the fresh Redis and queues nothing.
    again = faults.cli("preannotate-2", "preannotate", "--project", str(project))
    assert again.proc.wait(timeout=120) == 0, again.text()
    assert f"{N_TASKS} already predicted" in again.text() and "0 to predict" in again.text()


def test_new_work_succeeds_after_the_restart(stack: RedisStack) -> None:
    faults = stack.stack
    project, task_ids = faults.create_project([f"img{i:03d}.png" for i in range(N_TASKS, N_TASKS + 3)])
    faults.ls.connect_ml_backend(project, stack.backend_url)

    faults.ls.retrieve_predictions(project, task_ids)  # 3 tasks: answered inline by the backend

    counts = predictions_by_task(faults.ls, project, faults.version)
    assert counts == dict.fromkeys(task_ids, 1), stack.backend.text()[-3000:] + stack.worker.text()[-3000:]
    stack.worker.check_alive()
    stack.backend.check_alive()
