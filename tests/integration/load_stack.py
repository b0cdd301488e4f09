"""A loopback stack for load tests, and a bounded load generator (``benchmarks/bench_load.py``, ``test_load.py``).

:func:`load_stack` starts, on 127.0.0.1 only, and stops on exit (even when the caller fails):

- Redis: the shared server at 127.0.0.1:6379, database 8, with a key prefix of its own (only
  those keys are deleted afterwards);
- images: ``n_images`` distinct small PNGs behind a threaded HTTP server on a free port, which the
  worker may fetch (``ASSISTANT_MEDIA_ALLOWED_HOSTS=["127.0.0.1"]``), as it fetches Label Studio's;
- one real ``assistant worker -Q predict`` (solo pool, as a one-process deployment runs it)
  serving a tiny checkpoint (test-tiny, 32 px) or the bundled ``assets/world-tiny``;
- the real backend, ``assistant serve`` (uvicorn), with Basic auth, a Label Studio API key that
  nothing on loopback answers to, and the default inline budget (60 s) and chunk size (32).

:func:`run_load` then sends, through ``asyncio`` and ``httpx``:

- ``small`` ``/predict`` calls of one task each and ``large`` calls of ``large_tasks`` tasks, at
  most ``concurrency`` in flight, the large ones spread over the run; every task id is new, so no
  task is skipped as "in flight";
- ``GET /health`` every ``health_interval_s`` on a connection of its own, for the whole run.

It stops by itself: when every call has answered, or after ``max_seconds`` (calls still open are
cancelled and counted as unanswered). Nothing is timed against a target here; the callers print
or assert on the :class:`LoadReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.processes import (
    REPO_ROOT,
    Process,
    assistant,
    assistant_env,
    free_port,
    healthy,
    sees_a_worker,
    wait_for,
)
from tests.workers._helpers import ImageServer, save_tiny_checkpoint, write_images

REDIS_URL = "redis://127.0.0.1:6379/8"
BUNDLED_MODEL = REPO_ROOT / "assets" / "world-tiny"
TINY_VERSION = "load-tiny-v1"
USER, PASSWORD = "ls-load", "load-pa55w0rd-3c1e"
LS_API_KEY = "ls-load-api-k3y-9a7f"
# model_threshold="0" and model_max_tags="2": every task gets a prediction with a random model.
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple" model_threshold="0" model_max_tags="2">
    <Choice value="cat"/>
    <Choice value="dog"/>
    <Choice value="snow"/>
    <Choice value="beach"/>
  </Choices>
</View>"""
START_TIMEOUT_S = 180.0


@dataclass
class LoadStack:
    """The running stack: where the backend listens, the images, the processes and their logs."""

    url: str
    auth: tuple[str, str]
    image_urls: list[str]
    backend: Process
    worker: Process
    model: str

    def check_alive(self) -> None:
        """Raise with the log tail when the backend or the worker exited."""
        for proc in (self.backend, self.worker):
            proc.check_alive()

    def logs(self) -> str:
        """Both processes' logs."""
        return self.backend.text() + "\n" + self.worker.text()


def redis_reachable() -> str | None:
    """None when the load test's Redis answers, else why not."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable at {REDIS_URL}: {exc}"
    finally:
        client.close()
    return None


@contextlib.contextmanager
def load_stack(root: Path, *, n_images: int, model: str = "tiny") -> Iterator[LoadStack]:
    """Start Redis keys, images, a worker and the backend under ``root``; stop everything on exit.

    Args:
        root: A scratch folder (logs, home, images, checkpoint).
        n_images: Distinct images to serve (one per task, so that no task hits the feature cache).
        model: ``tiny`` (a random test-tiny checkpoint saved under ``root``) or ``bundled``
            (``assets/world-tiny``).

    Raises:
        RuntimeError: Redis is unreachable, or a process exited while starting.
        AssertionError: The backend or the worker did not come up in 180 s.
    """
    import redis

    why = redis_reachable()
    if why is not None:
        raise RuntimeError(why)
    if model == "bundled":
        base = BUNDLED_MODEL
    else:
        base = root / "model" / TINY_VERSION
        if not base.exists():
            save_tiny_checkpoint(base, TINY_VERSION)
    names = [p.name for p in write_images(root / "images", n_images, size=(64, 48))]
    prefix = f"assistant-load-{uuid.uuid4().hex[:10]}:"
    port = free_port()
    env = assistant_env(
        home=root / "home",
        base_model=base,
        broker_url=REDIS_URL,
        prefix=prefix,
        ls_url="http://127.0.0.1:9",
        ls_key=LS_API_KEY,
        batch_size="16",
        media_allowed_hosts=json.dumps(["127.0.0.1"]),
        media_retries="0",
        basic_auth_user=USER,
        basic_auth_password=PASSWORD,
        host="127.0.0.1",
        port=str(port),
    )
    server = ImageServer(root / "images").start()
    procs: list[Process] = []
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        worker = Process("worker", assistant("worker", "-Q", "predict", "-n", "load@%h"), env, root / "worker.log")
        procs.append(worker)
        backend = Process(
            "backend", assistant("serve", "--host", "127.0.0.1", "--port", str(port)), env, root / "backend.log"
        )
        procs.append(backend)
        url = f"http://127.0.0.1:{port}"
        wait_for("the backend's /health", lambda: healthy(url), START_TIMEOUT_S, *procs, interval=0.3)
        wait_for("the worker to be ready", lambda: " ready." in worker.text(), START_TIMEOUT_S, *procs, interval=0.3)
        wait_for("the backend to see the worker", lambda: sees_a_worker(url), START_TIMEOUT_S, *procs, interval=0.5)
        yield LoadStack(url, (USER, PASSWORD), [f"{server.url}/{n}" for n in names], backend, worker, model)
    finally:
        for proc in procs:
            proc.stop()
        server.stop()
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


# --- the load ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadPlan:
    """What :func:`run_load` sends.

    Attributes:
        small: ``/predict`` calls of one task each.
        large: ``/predict`` calls of ``large_tasks`` tasks each, spread over the run.
        large_tasks: Tasks per large call.
        concurrency: Calls in flight at most.
        max_seconds: The run stops after this long, whatever is still open.
        health_interval_s: Seconds between ``/health`` polls.
        request_timeout_s: Client timeout of one call (above the backend's 60 s inline budget).
    """

    small: int = 200
    large: int = 4
    large_tasks: int = 80
    concurrency: int = 32
    max_seconds: float = 300.0
    health_interval_s: float = 0.025
    request_timeout_s: float = 90.0

    @property
    def tasks(self) -> int:
        """Tasks the plan sends in all."""
        return self.small + self.large * self.large_tasks


@dataclass
class LoadReport:
    """What happened: latencies in seconds, statuses, and what every call answered.

    Attributes:
        latencies: ``small``, ``large`` and ``health`` → seconds of each answered call.
        statuses: ``"<kind> <status>"`` → count; a call without an answer counts under
            ``"<kind> <exception name>"``.
        unanswered: Calls that got no HTTP answer (client timeout, connection error, cancelled).
        tasks_sent: Tasks in the ``/predict`` calls made.
        tasks_answered: Result entries in the 200 answers (one per task when the contract holds).
        tasks_predicted: Of those, entries with a prediction (not ``[]``).
        short_answers: 200 answers whose ``results`` did not have one entry per task.
        wall_s: Seconds from the first call to the last answer.
        stopped_early: The run hit ``max_seconds``.
    """

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"small": [], "large": [], "health": []})
    statuses: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    tasks_sent: int = 0
    tasks_answered: int = 0
    tasks_predicted: int = 0
    short_answers: int = 0
    wall_s: float = 0.0
    stopped_early: bool = False

    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for key, n in self.statuses.items() if key.split()[-1].startswith("5"))


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples``, linear between ranks; NaN when empty."""
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(samples: list[float]) -> dict[str, float]:
    """n, p50, p95, p99, max and mean of latencies, in milliseconds (n as a count)."""
    ms = [s * 1000 for s in samples]
    return {
        "n": float(len(ms)),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else float("nan"),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


class _Load:
    def __init__(self, stack: LoadStack, plan: LoadPlan, first_task_id: int) -> None:
        self.stack, self.plan = stack, plan
        self.report = LoadReport()
        self.next_id = first_task_id
        self.done = asyncio.Event()

    def _body(self, n_tasks: int) -> dict[str, Any]:
        tasks = []
        for _ in range(n_tasks):
            image = self.stack.image_urls[self.next_id % len(self.stack.image_urls)]
            tasks.append({"id": self.next_id, "data": {"image": image}, "project": 1})
            self.next_id += 1
        self.report.tasks_sent += n_tasks
        return {"tasks": tasks, "project": "1.1700000000", "label_config": CONFIG, "params": {"login": None}}

    async def predict(self, client: httpx.AsyncClient, kind: str, n_tasks: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            body = self._body(n_tasks)
            started = time.perf_counter()
            try:
                response = await client.post("/predict", json=body)
            except (httpx.HTTPError, asyncio.CancelledError) as exc:
                self.report.unanswered += 1
                self.report.statuses[f"{kind} {type(exc).__name__}"] += 1
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            self.report.latencies[kind].append(time.perf_counter() - started)
            self.report.statuses[f"{kind} {response.status_code}"] += 1
            if response.status_code == 200:
                results = response.json().get("results", [])
                self.report.tasks_answered += len(results)
                self.report.tasks_predicted += sum(1 for r in results if r)
                self.report.short_answers += len(results) != n_tasks

    async def health(self, client: httpx.AsyncClient) -> None:
        while not self.done.is_set():
            tick = time.perf_counter()
            try:
                response = await client.get("/health")
                self.report.latencies["health"].append(time.perf_counter() - tick)
                self.report.statuses[f"health {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.report.statuses[f"health {type(exc).__name__}"] += 1
            await asyncio.sleep(max(0.0, self.plan.health_interval_s - (time.perf_counter() - tick)))

    async def run(self) -> LoadReport:
        plan = self.plan
        limits = httpx.Limits(max_connections=plan.concurrency + 4, max_keepalive_connections=plan.concurrency + 4)
        timeout = httpx.Timeout(plan.request_timeout_s, connect=10.0)
        async with (
            httpx.AsyncClient(base_url=self.stack.url, auth=self.stack.auth, timeout=timeout, limits=limits) as api,
            httpx.AsyncClient(base_url=self.stack.url, timeout=httpx.Timeout(10.0)) as probe,
        ):
            gate = asyncio.Semaphore(plan.concurrency)
            kinds = ["small"] * plan.small
            # The large calls spread evenly among the small ones (the first one early).
            for i in range(plan.large):
                kinds.insert(min(len(kinds), (i * len(kinds)) // max(1, plan.large) + 1), "large")
            poller = asyncio.create_task(self.health(probe))
            started = time.perf_counter()
            calls = [
                asyncio.create_task(self.predict(api, kind, plan.large_tasks if kind == "large" else 1, gate))
                for kind in kinds
            ]
            _, pending = await asyncio.wait(calls, timeout=plan.max_seconds)
            self.report.stopped_early = bool(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.report.wall_s = time.perf_counter() - started
            self.done.set()
            await poller
        return self.report


def run_load(stack: LoadStack, plan: LoadPlan, *, first_task_id: int = 1_000_000) -> LoadReport:
    """Send ``plan`` to ``stack`` (see the module docstring) and report; bounded by ``plan.max_seconds``."""
    return asyncio.run(_Load(stack, plan, first_task_id).run())


def sequential_latencies(stack: LoadStack, path: str, n: int, *, tasks: int = 0, first_task_id: int = 1) -> list[float]:
    """Seconds of ``n`` calls one after the other on an idle stack (the baseline of a run).

    ``tasks`` > 0 makes them ``/predict`` calls of that many new tasks each; else ``GET path``.
    """
    out = []
    with httpx.Client(base_url=stack.url, auth=stack.auth, timeout=120.0) as client:
        next_id = first_task_id
        for _ in range(n):
            started = time.perf_counter()
            if tasks:
                ids = range(next_id, next_id + tasks)
                next_id += tasks
                body = {
                    "tasks": [{"id": i, "data": {"image": stack.image_urls[i % len(stack.image_urls)]}} for i in ids],
                    "project": "1.1700000000",
                    "label_config": CONFIG,
                }
                response = client.post(path, json=body)
            else:
                response = client.get(path)
            response.raise_for_status()
            out.append(time.perf_counter() - started)
    return out
