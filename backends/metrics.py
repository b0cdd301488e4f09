"""Prometheus metrics of the backend, served on ``GET /metrics``.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (tests build many apps in one
process). What the background publishing task does happens in worker processes, so those counters
live in Redis (:meth:`backends.state.SharedState.stats`) and are read at scrape time by
:class:`BackgroundCollector`, with the request-path Redis timeout; a Redis outage yields no
background samples rather than a failed scrape.

=============================================  =========================================================
``assistant_backend_request_seconds``          histogram per route and method
``assistant_backend_requests_total``           per route, method and status
``assistant_backend_predictions_total``        predictions answered inline by ``/predict``
``assistant_backend_background_tasks_total``   tasks handed to the background path (``queued``)
``assistant_backend_skipped_tasks_total``      tasks not queued again because a job already has them
``assistant_backend_failed_tasks_total``       tasks that got no prediction, per reason
``assistant_backend_webhook_events_total``     webhook events per action and outcome
``assistant_backend_errors_total``             error answers per route and kind (4xx/5xx)
``assistant_background_<counter>_total``       publish task counters: published, replaced, skipped, failed_<reason>
``assistant_queue_messages``                   messages waiting per queue, read from the broker at scrape
                                               time (with ``assistant_queue_unacked_messages`` and
                                               ``assistant_broker_up``: :mod:`state.metrics`)
``assistant_backend_policy_errors_total``      predictions served without the project's refit and guard
                                               (the effort ledger could not be read)
``assistant_effort_*``                         the effort ledger per project, read at scrape time
                                               (:class:`EffortCollector`; ``docs/preannotation.md``)
``assistant_project_rounds``                   rounds in each project's round log by ``status``
                                               (promoted, kept, skipped, failed), whoever ran them: a
                                               worker or ``assistant round run`` (:class:`RoundLogCollector`)
=============================================  =========================================================

The effort ledger's figures (:class:`EffortCollector`), per project (``project``) and, for the
counts, per model version (``model_version``):

=============================================  =========================================================
``assistant_effort_tasks_total``               annotated tasks counted against their prediction
``assistant_effort_kept_total``                shown tags kept (also ``_removed_total``, ``_added_total``)
``assistant_effort_costlier_tasks_total``      tasks whose pre-annotation cost more than from scratch
``assistant_effort_ratio``                     edits / edits from scratch (``scope``: ``in_service``,
                                               ``all``); below 1 pre-annotation saves work
``assistant_effort_pending_events``            ledger rows still to count
``assistant_effort_count_failures``            counting passes failed in a row (0: the last went through)
``assistant_effort_refits_total``              calibration refits per ``status`` (``fitted``, ``failed``)
``assistant_guard_tripped_tags``               tags the guard stops showing under the model in service
``assistant_effort_cautious``                  1 while the model's calibration is unmeasured and the
                                               project has no refit (few, confident tags)
``assistant_effort_up``                        1 when the effort ledger could be read
=============================================  =========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from state.metrics import QueueDepthCollector, QueueDepths

__all__ = ["BackendMetrics", "BackgroundCollector", "EffortCollector", "EffortFigures", "RoundLogCollector"]

logger = logging.getLogger(__name__)

# Seconds: /health and /webhook sit in the first buckets, /predict spreads up to the 60 s budget.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0)


class BackgroundCollector(Collector):
    """Exports the Redis counters of the background path at scrape time.

    Args:
        read: Returns the counters (``SharedState.stats``); any exception skips them.
    """

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter per stat name."""
        try:
            stats = self._read()
        except Exception as exc:  # a scrape must not fail because Redis is down
            logger.warning("background counters unavailable: %s", exc)
            return
        for name, value in sorted(stats.items()):
            safe = "".join(c if c.isalnum() else "_" for c in name)
            yield CounterMetricFamily(
                f"assistant_background_{safe}", f"Background publishing: {name} (all processes)", value=value
            )


#: ``read() -> {project: project_effort(...) plus "refits": {status: n}}`` (``state.effort_summary``).
EffortFigures = Callable[[], dict[int, dict[str, Any]]]


class RoundLogCollector(Collector):
    """Exports ``assistant_project_rounds{project,status}`` from the round logs at scrape time.

    A failed round is otherwise only in the worker's log and counter; this gauge sees every round,
    also those run by ``assistant round run`` in a shell (issue 16, 6b).

    Args:
        read: Returns project -> status -> rounds; an exception exports nothing (logged).
    """

    def __init__(self, read: Callable[[], Mapping[int, Mapping[str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """One gauge family, a sample per project and status."""
        try:
            counts = self._read()
        except Exception as exc:  # an unreadable models directory must not fail the scrape
            logger.warning("round logs unavailable: %s", exc)
            return
        family = GaugeMetricFamily(
            "assistant_project_rounds", "Rounds in the project's round log, by status", labels=["project", "status"]
        )
        for project, by_status in sorted(counts.items()):
            for status, n in sorted(by_status.items()):
                family.add_metric([str(project), status], float(n))
        yield family


class EffortCollector(Collector):
    """Exports the effort ledger's figures at scrape time (module docstring).

    Args:
        read: Returns the figures per project; any exception exports ``assistant_effort_up 0`` only.
    """

    def __init__(self, read: EffortFigures) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """The families of the module docstring."""
        up = GaugeMetricFamily("assistant_effort_up", "1 when the effort ledger could be read")
        try:
            figures = self._read()
        except Exception as exc:  # a scrape must not fail because the database is down
            logger.warning("effort figures unavailable: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        counts = {
            name: CounterMetricFamily(f"assistant_effort_{name}", help_text, labels=["project", "model_version"])
            for name, help_text in (
                ("tasks", "Annotated tasks counted against the prediction they started from"),
                ("kept", "Shown tags kept"),
                ("removed", "Shown tags removed"),
                ("added", "Tags added that were not shown"),
                ("costlier_tasks", "Tasks whose pre-annotation cost more than labeling from scratch"),
            )
        }
        ratio = GaugeMetricFamily(
            "assistant_effort_ratio",
            "Edits against edits from scratch (below 1 saves work)",
            labels=["project", "scope"],
        )
        pending = GaugeMetricFamily("assistant_effort_pending_events", "Ledger rows still to count", labels=["project"])
        failures = GaugeMetricFamily(
            "assistant_effort_count_failures", "Counting passes failed in a row", labels=["project"]
        )
        refits = CounterMetricFamily(
            "assistant_effort_refits", "Calibration refits by status", labels=["project", "status"]
        )
        tripped = GaugeMetricFamily(
            "assistant_guard_tripped_tags",
            "Tags the guard stops showing under the model in service",
            labels=["project"],
        )
        cautious = GaugeMetricFamily(
            "assistant_effort_cautious",
            "1 while serving few, confident tags (unmeasured calibration)",
            labels=["project"],
        )
        for project, effort in sorted(figures.items()):
            p = str(project)
            for v in effort["versions"]:
                for name in ("tasks", "kept", "removed", "added"):
                    counts[name].add_metric([p, v["model_version"]], float(v[name]))
                counts["costlier_tasks"].add_metric([p, v["model_version"]], float(v["costlier_tasks"]))
            for scope, block in (("all", effort["totals"]), ("in_service", effort["in_service"])):
                if block is not None and block.get("ratio") is not None:
                    ratio.add_metric([p, scope], float(block["ratio"]))
            pending.add_metric([p], float(effort["counting"]["pending"]))
            failures.add_metric([p], float(effort["counting"]["failures"]))
            for status in ("fitted", "failed"):
                refits.add_metric([p, status], float(effort.get("refits", {}).get(status, 0)))
            tripped.add_metric([p], float(len(effort["guard"]["tripped"])))
            cautious.add_metric([p], 1.0 if (effort.get("calibration") or {}).get("conservative") else 0.0)
        yield from (*counts.values(), ratio, pending, failures, refits, tripped, cautious)


class BackendMetrics:
    """The backend's metrics on a private registry.

    Args:
        stats: Reads the background counters (None: not exported).
        queues: Reads the broker's queue depths (None: not exported).
        effort: Reads the effort ledger's figures (None: not exported).
        rounds: Reads each project's rounds by status (``state.round_log.round_statuses``;
            None: not exported).
    """

    def __init__(
        self,
        stats: Callable[[], dict[str, int]] | None = None,
        queues: Callable[[], QueueDepths] | None = None,
        effort: EffortFigures | None = None,
        rounds: Callable[[], Mapping[int, Mapping[str, int]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "assistant_backend_request_seconds", "Request latency", ["route", "method"], buckets=_BUCKETS, registry=r
        )
        self.requests = Counter(
            "assistant_backend_requests", "Requests answered", ["route", "method", "status"], registry=r
        )
        self.predictions = Counter(
            "assistant_backend_predictions", "Predictions answered inline by /predict", registry=r
        )
        self.background = Counter(
            "assistant_backend_background_tasks", "Tasks handed to the background path", registry=r
        )
        self.skipped = Counter(
            "assistant_backend_skipped_tasks", "Tasks not queued again: a job already covers them", registry=r
        )
        self.failed = Counter(
            "assistant_backend_failed_tasks", "Tasks that got no prediction, by reason", ["reason"], registry=r
        )
        self.webhook_events = Counter(
            "assistant_backend_webhook_events", "Webhook events", ["action", "outcome"], registry=r
        )
        self.errors = Counter("assistant_backend_errors", "Error answers", ["route", "kind"], registry=r)
        self.policy_errors = Counter(
            "assistant_backend_policy_errors",
            "Predictions served without the project's refit and guard: the effort ledger could not be read",
            registry=r,
        )
        if stats is not None:
            r.register(BackgroundCollector(stats))
        if queues is not None:
            r.register(QueueDepthCollector(queues))
        if effort is not None:
            r.register(EffortCollector(effort))
        if rounds is not None:
            r.register(RoundLogCollector(rounds))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.request_seconds.labels(route, method).observe(seconds)
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, "4xx" if status < 500 else "5xx").inc()
