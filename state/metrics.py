"""Prometheus metrics of the workers, and the depth of the task queues read from the broker.

Light on purpose (prometheus_client, redis and Celery's signals; no torch): the backend imports
:class:`QueueDepthCollector` for its own ``/metrics`` and ``assistant status`` reads
:func:`queue_depths`.

**How a worker exports its metrics.** ``assistant worker --metrics-port 9808`` (or
``ASSISTANT_WORKER_METRICS_PORT``) serves ``GET /metrics`` from the worker's main process, one
endpoint per worker whatever its pool:

- ``solo`` and ``threads`` pools run every task in the main process: the exporter serves the
  process's own registry (:func:`worker_metrics`);
- the ``prefork`` pool runs tasks in child processes, whose counters the main process cannot see.
  There the command switches prometheus_client to its multiprocess mode before anything imports
  it (``PROMETHEUS_MULTIPROC_DIR`` = a fresh private directory): every process writes its samples
  to memory-mapped files there, and the exporter sums them at scrape time
  (:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Counters of a child that died
  stay in the sum, so totals never go backwards; there are no gauges, so no process ever needs to
  be marked dead.

Workers on several machines are each scraped on their own port (docs/observability.md).

=======================================================  ===================================================
``assistant_worker_task_seconds``                        histogram per task name and final state (success,
                                                         failure, retry, ...): tasks run and their duration
``assistant_worker_images_total``                        images per task and outcome: ``cached`` (features
                                                         from the feature cache), ``computed`` (model),
                                                         ``failed``; the cache hit rate is cached over
                                                         cached + computed
``assistant_worker_image_failures_total``                failed images per task and reason
``assistant_rounds_total``                               fine-tuning rounds run by this worker per trigger
                                                         and status (promoted, kept, skipped, busy, failed)
``assistant_queue_messages``                             (backend) messages waiting per queue
``assistant_queue_unacked_messages``                     (backend) messages delivered and not acknowledged
``assistant_broker_up``                                  (backend) 1 when the broker's Redis answered
=======================================================  ===================================================
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from state.contracts import EMBED, PREDICT, TRAIN_ROUND

__all__ = [
    "QueueDepthCollector",
    "QueueDepths",
    "TaskTimer",
    "WorkerMetrics",
    "broker_redis",
    "connect_task_signals",
    "queue_depths",
    "queue_keys",
    "scheduled_unacked",
    "start_exporter",
    "worker_metrics",
]

logger = logging.getLogger(__name__)

# Seconds: a chunk of 32 images takes ~2.5 s on a CPU and well under 1 s on a GPU, a full message
# of 1,024 images ~80 s on a CPU, and a round up to the 4 h training limit.
TASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
# Image outcomes; "cached" / ("cached" + "computed") is the feature cache's hit rate.
IMAGE_OUTCOMES = ("cached", "computed", "failed")

# kombu's Redis transport keeps a queue as a list under its name, plus one list per priority step
# above 0 (kombu.transport.redis: PRIORITY_STEPS = [0, 3, 6, 9], separator "\x06\x16"), and the
# messages delivered to workers but not yet acknowledged in the hash "unacked". All of them carry
# the global key prefix (ASSISTANT_REDIS_KEY_PREFIX) when one is set.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"


# --- worker-side metrics ------------------------------------------------------------------------
class WorkerMetrics:
    """The worker's metrics on a registry of their own (tests build as many as they like).

    Args:
        registry: Where the metrics register (default: a new one).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.task_seconds = Histogram(
            "assistant_worker_task_seconds",
            "Tasks run by the worker, by name and final state, and their duration",
            ["task", "state"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "assistant_worker_images",
            "Images handled by predict and embed tasks, by outcome",
            ["task", "outcome"],
            registry=r,
        )
        self.image_failures = Counter(
            "assistant_worker_image_failures",
            "Images that could not be used, by reason",
            ["task", "reason"],
            registry=r,
        )
        self.rounds = Counter(
            "assistant_rounds",
            "Fine-tuning rounds run by the worker, by trigger and status",
            ["trigger", "status"],
            registry=r,
        )
        # Series that exist from the start: a rate over a series that appears only with its first
        # sample misses that sample, and dashboards show "no data" instead of 0.
        for task in (PREDICT, EMBED):
            for outcome in IMAGE_OUTCOMES:
                self.images.labels(task, outcome)

    def record_images(self, task: str, *, cached: int, computed: int, failures: Iterable[str] = ()) -> None:
        """Count one batch: images served from the cache, encoded by the model, and failed (their reasons)."""
        if cached:
            self.images.labels(task, "cached").inc(cached)
        if computed:
            self.images.labels(task, "computed").inc(computed)
        failed = 0
        for reason in failures:
            self.image_failures.labels(task, reason).inc()
            failed += 1
        if failed:
            self.images.labels(task, "failed").inc(failed)

    def record_task(self, task: str, state: str, seconds: float) -> None:
        """Count one finished task run (``state``: Celery's, lower-cased)."""
        self.task_seconds.labels(task, state).observe(max(0.0, seconds))

    def record_round(self, trigger: str, status: str) -> None:
        """Count one round's outcome."""
        self.rounds.labels(trigger, status).inc()


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """The process's worker metrics (created on first use, never at import)."""
    return WorkerMetrics()


class TaskTimer:
    """Receivers of Celery's task signals: the duration and state of every task, the outcome of rounds.

    Args:
        metrics: Returns the metrics to record into (called at each task's end).
    """

    def __init__(self, metrics: Callable[[], WorkerMetrics]) -> None:
        self._metrics = metrics
        self._started: dict[str, float] = {}
        # The threads pool runs tasks concurrently in one process.
        self._lock = threading.Lock()

    def prerun(self, task_id: str | None = None, **_: Any) -> None:
        """``task_prerun``: remember when the task started."""
        with self._lock:
            self._started[str(task_id)] = time.monotonic()

    def postrun(
        self,
        task_id: str | None = None,
        task: Any = None,
        state: str | None = None,
        retval: Any = None,
        kwargs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        """``task_postrun`` (sent whatever the outcome): record the duration, state and round outcome."""
        with self._lock:
            started = self._started.pop(str(task_id), None)
        name = str(getattr(task, "name", None) or "unknown")
        seconds = 0.0 if started is None else time.monotonic() - started
        try:
            metrics = self._metrics()
            metrics.record_task(name, (state or "unknown").lower(), seconds)
            if name == TRAIN_ROUND:
                status = (
                    str(retval.get("status") or "done") if state == "SUCCESS" and isinstance(retval, dict) else "failed"
                )
                metrics.record_round(str((kwargs or {}).get("trigger") or "unknown"), status)
        except Exception:  # a metric must never fail a task
            logger.exception("could not record the metrics of task %s", task_id)


@functools.cache
def _timer() -> TaskTimer:
    return TaskTimer(worker_metrics)


def connect_task_signals() -> None:
    """Time every task and count round outcomes into :func:`worker_metrics` (``task_prerun``/``task_postrun``).

    Called by the worker command (the composition root); calling it again changes nothing, because
    the receivers are connected under fixed ``dispatch_uid``s.
    """
    timer = _timer()
    task_prerun.connect(timer.prerun, weak=False, dispatch_uid="assistant-metrics-prerun")
    task_postrun.connect(timer.postrun, weak=False, dispatch_uid="assistant-metrics-postrun")


def start_exporter(port: int, host: str = "127.0.0.1", *, multiprocess_dir: Path | None = None) -> Any:
    """Serve ``GET /metrics`` on ``host:port`` from a daemon thread of this process.

    Args:
        port: The port (0 picks a free one: the server's ``server_port`` tells which).
        host: The address to bind.
        multiprocess_dir: The ``PROMETHEUS_MULTIPROC_DIR`` of a prefork worker: the exporter then
            sums every process's samples found there; None serves this process's metrics.

    Returns:
        The HTTP server (``shutdown()`` stops it).

    Raises:
        OSError: The port is taken.
    """
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    else:
        registry = worker_metrics().registry
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


# --- queue depth (read from the broker) ---------------------------------------------------------
@dataclass(frozen=True)
class QueueDepths:
    """What the broker holds.

    Attributes:
        waiting: Messages waiting per queue (not yet delivered to any worker).
        unacked: Messages delivered to workers and not yet acknowledged, all queues together:
            tasks running (``acks_late``) or prefetched.
    """

    waiting: dict[str, int]
    unacked: int

    @property
    def total_waiting(self) -> int:
        """Messages waiting in every queue."""
        return sum(self.waiting.values())


def queue_keys(queue: str, prefix: str = "") -> list[str]:
    """The Redis lists holding a queue's messages (its name, then one per priority step)."""
    return [f"{prefix}{queue}", *(f"{prefix}{queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS)]


def queue_depths(client: redis.Redis, queues: Sequence[str], prefix: str = "") -> QueueDepths:
    """Read the queues' lengths and the unacknowledged messages in one round trip.

    Args:
        client: A client of the broker's Redis database.
        queues: Queue names (e.g. ``("predict", "train")``).
        prefix: ``Settings.redis_key_prefix``.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue, prefix):
            pipe.llen(key)
    pipe.hlen(f"{prefix}{_UNACKED_KEY}")
    values = [int(v) for v in pipe.execute()]
    per_queue = len(_PRIORITY_STEPS) + 1
    waiting = {q: sum(values[i * per_queue : (i + 1) * per_queue]) for i, q in enumerate(queues)}
    return QueueDepths(waiting=waiting, unacked=values[-1])


def scheduled_unacked(client: redis.Redis, prefix: str = "", *, now: float | None = None, limit: int = 1000) -> int:
    """How many unacknowledged messages a worker holds until a time still to come (an ETA).

    Celery hands a message with an ETA to a worker at once, and the worker keeps it, unacknowledged,
    until then. The backend's follow-up of every Retrieve Predictions is such a message: its publish
    task waits out the inline budget (60 s) plus a second, then finds the chunk answered and stops.
    So an idle system shows ``unacked`` 1 for about a minute after each Retrieve; this tells those
    apart from tasks that really run. Reads at most ``limit`` entries of the ``unacked`` hash.

    Args:
        client: A client of the broker's Redis database.
        prefix: ``Settings.redis_key_prefix``.
        now: The current time (seconds since the epoch; default: now).
        limit: The most entries read.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    moment = time.time() if now is None else now
    scheduled = 0
    for _, raw in client.hscan_iter(f"{prefix}{_UNACKED_KEY}", count=min(limit, 500)):
        limit -= 1
        if limit < 0:
            break
        try:
            # kombu stores [message, exchange, routing key]; Celery puts the ETA in the headers.
            eta = json.loads(raw)[0]["headers"].get("eta")
            when = dt.datetime.fromisoformat(eta) if isinstance(eta, str) else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if when is not None:
            when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
            scheduled += when.timestamp() > moment
    return scheduled


def broker_redis(broker_url: str, *, timeout_s: float = 1.0) -> redis.Redis | None:
    """A client of the broker's Redis with short timeouts and no retries, or None for another broker."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    # No retries: a status command or a scrape must answer "Redis is down" fast, not after
    # redis-py's default 10 retries with backoff.
    client: redis.Redis = redis.Redis.from_url(
        broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    return client


class QueueDepthCollector(Collector):
    """Exports :class:`QueueDepths` at scrape time; a broker outage gives ``assistant_broker_up 0``.

    Args:
        read: Returns the depths (e.g. ``functools.partial(queue_depths, client, queues, prefix)``).
    """

    def __init__(self, read: Callable[[], QueueDepths]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The queue gauges, or only ``assistant_broker_up 0`` when the broker cannot be read."""
        up = GaugeMetricFamily("assistant_broker_up", "1 when the broker's Redis answered the last scrape")
        try:
            depths = self._read()
        except Exception as exc:  # a scrape must not fail because Redis is down
            logger.warning("queue depths unavailable: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        waiting = GaugeMetricFamily("assistant_queue_messages", "Messages waiting in a queue", labels=["queue"])
        for queue, count in sorted(depths.waiting.items()):
            waiting.add_metric([queue], float(count))
        yield waiting
        unacked = GaugeMetricFamily(
            "assistant_queue_unacked_messages", "Messages delivered to workers and not yet acknowledged (all queues)"
        )
        unacked.add_metric([], float(depths.unacked))
        yield unacked
