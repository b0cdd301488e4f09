"""Whether some worker consumes a queue: asked with Celery's broadcast, remembered a while.

``/predict`` waits up to its inline budget (60 s) for the workers. With no worker consuming the
predict queue it would wait all of it and answer nothing, and Label Studio's user would see
predictions vanish without a word (issue 16, 6c). So the predictor asks first: when no worker
consumes the queue, it answers at once with a message that names the fix (start
``assistant worker``) and leaves the tasks to the background publisher, which posts them when a
worker starts. ``/health`` reports the last answer in its body; it never asks itself (Label
Studio gives ``/health`` 1 s), it only starts a refresh in the background.

Asking is Celery's ``active_queues`` broadcast: every worker answers with the queues it
consumes, and the caller waits ``timeout_s`` (0.5 s) for answers because it cannot know how many
workers there are. An answer is remembered for ``present_ttl_s`` (30 s) when a worker was found
and refreshed in the background after that, so a request never waits for the broadcast while
workers are online. "No worker" is never answered from memory: ``/predict`` asks again (paying
at most ``timeout_s``), so a worker started a moment ago is seen by the very next request (a
remembered empty answer once sent a user's first predictions to the background, with a false
"no worker" warning, seconds after the worker came up). Requests that ask together share one
answer. A broker that does not answer gives ``None`` (unknown): the predictor then waits as
before, and nobody asks that broker again for ``absent_ttl_s`` (5 s), which also spaces
``/health``'s background refreshes of an empty answer.

A worker that answered lately and is missing from the last answer is *busy*, not gone, for
``busy_grace_s`` (120 s): the default CPU worker runs the solo pool, which cannot answer a
broadcast while it runs a task (a batch of predictions under load, a training round), so its
silence is unknown (``None``), never "no worker".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

__all__ = [
    "NO_WORKER_FIX",
    "QueueConsumers",
    "QueueSnapshot",
    "active_queues_of",
    "no_worker_message",
    "workers_by_queue",
]

logger = logging.getLogger(__name__)

#: What to do when no worker consumes the predict queue.
NO_WORKER_FIX = "start one: `assistant worker` (its --queues must include the queue)"


def no_worker_message(queue: str) -> str:
    """The message of a ``/predict`` that found no worker on ``queue``."""
    return (
        f"No worker is consuming the '{queue}' queue: the tasks are queued and will be predicted in "
        f"the background once a worker runs. Fix: {NO_WORKER_FIX}."
    )


@dataclass(frozen=True)
class QueueSnapshot:
    """The last answer: the queues some worker consumes (None: unknown), and its age."""

    queues: frozenset[str] | None
    age_s: float | None
    busy: frozenset[str] = frozenset()

    def consumed(self, queue: str) -> bool | None:
        """Whether some worker consumes ``queue``; None when never asked, the broker did not answer, or
        a worker that consumed it answered lately but not this time (busy: module docstring)."""
        if self.queues is None:
            return None
        if queue in self.queues:
            return True
        return None if queue in self.busy else False


def workers_by_queue(app: Celery, timeout_s: float) -> dict[str, list[str]]:
    """Queue -> names of the workers of ``app`` consuming it (Celery's ``active_queues`` broadcast).

    The one place the backend asks Celery about its workers: ``/predict`` and ``/health`` use the
    queue names (:func:`active_queues_of`), the dashboard the names per queue (injected by the
    backend, ``backends.app``, so the dashboard never imports Celery's app).
    """
    replies: dict[str, Any] = app.control.inspect(timeout=timeout_s).active_queues() or {}
    out: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            if queue.get("name"):
                out.setdefault(str(queue["name"]), []).append(str(worker))
    return out


def active_queues_of(app: Celery, timeout_s: float) -> Callable[[], frozenset[str]]:
    """Asks the workers of ``app`` which queues they consume (:func:`workers_by_queue`)."""

    def ask() -> frozenset[str]:
        return frozenset(workers_by_queue(app, timeout_s))

    return ask


class QueueConsumers:
    """Which queues the workers consume, asked at most once at a time and remembered (module docstring).

    Args:
        ask: Returns the queue names some worker consumes; raises when the broker cannot be asked.
        present_ttl_s: Seconds an answer that found workers is used before a background refresh.
        absent_ttl_s: Seconds a failed answer is used before asking again, and between ``/health``'s
            background refreshes of an empty one (``/predict`` asks again after an empty answer).
        busy_grace_s: Seconds a queue some worker consumed stays "busy" (unknown) rather than
            unconsumed when its workers stop answering.
        clock: Monotonic seconds (tests move it).
    """

    def __init__(
        self,
        ask: Callable[[], frozenset[str]],
        *,
        present_ttl_s: float = 30.0,
        absent_ttl_s: float = 5.0,
        busy_grace_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self.present_ttl_s, self.absent_ttl_s, self.busy_grace_s = present_ttl_s, absent_ttl_s, busy_grace_s
        self._seen_at: dict[str, float] = {}
        self._clock = clock
        self._asking = threading.Lock()
        self._queues: frozenset[str] | None = None
        self._at: float | None = None
        self._refreshing = False

    def snapshot(self) -> QueueSnapshot:
        """The last answer, without asking (``/health``)."""
        at, now = self._at, self._clock()
        busy = frozenset(q for q, seen in self._seen_at.items() if now - seen < self.busy_grace_s)
        return QueueSnapshot(self._queues, None if at is None else max(0.0, now - at), busy)

    def consumed(self, queue: str) -> bool | None:
        """Whether some worker consumes ``queue``: remembered, refreshed, or asked now (at most ``timeout_s``).

        ``False`` always comes from a question asked now (module docstring).
        """
        snap = self.snapshot()
        if snap.age_s is not None and snap.queues:
            if snap.age_s >= self.present_ttl_s:
                self.refresh_in_background()
            answer = snap.consumed(queue)
            if answer is not False:
                return answer
        elif snap.age_s is not None and snap.queues is None and snap.age_s < self.absent_ttl_s:
            return None  # the broker failed a moment ago: unknown, without asking it again yet
        return self._refresh().consumed(queue)

    def refresh_in_background(self) -> None:
        """Ask again in a daemon thread, unless an answer is fresh or a question is under way."""
        snap = self.snapshot()
        ttl = self.present_ttl_s if snap.queues else self.absent_ttl_s
        if self._refreshing or (snap.age_s is not None and snap.age_s < ttl):
            return
        self._refreshing = True
        threading.Thread(target=self._refresh, name="queue-consumers", daemon=True).start()

    def _refresh(self) -> QueueSnapshot:
        wanted_at = self._clock()
        with self._asking:
            if self._at is not None and self._at >= wanted_at:
                return self.snapshot()  # asked by another request while this one waited: that answer
            try:
                queues: frozenset[str] | None = self._ask()
            except Exception as exc:  # a broker outage: unknown, and /predict waits as before
                logger.warning("could not ask the workers which queues they consume: %s", exc)
                queues = None
            self._queues, self._at, self._refreshing = queues, self._clock(), False
            for queue in queues or ():
                self._seen_at[queue] = self._at
            return self.snapshot()
