"""The Celery application factory: configuration only, no tasks and no model code.

The HTTP backend and the CLI call :func:`make_celery` to *send* tasks by name
(``app.send_task(contracts.PREDICT, kwargs=...)``); a worker calls it with the task modules as
strings in ``include``, so importing this module never imports torch.

Example:
    >>> app = make_celery(get_settings())                          # doctest: +SKIP
    >>> app.send_task(PREDICT, kwargs=req.model_dump(mode="json"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from state.contracts import (
    CHECK_ROUNDS,
    EMBED,
    PREDICT,
    PROBE_IMAGE,
    QUEUE_PREDICT,
    QUEUE_TRAIN,
    SCHEDULED_ROUNDS,
    SCORE_POOL,
    TRAIN_ROUND,
)
from state.schedule import beat_schedule
from state.settings import Settings, get_settings

__all__ = ["DEFAULT_INCLUDE", "make_celery", "settings_of"]

logger = logging.getLogger(__name__)

# What a worker imports: the GPU tasks, the round task and the light beat tasks. The backend adds
# its own light publishing task module.
# workers.control adds the `assistant_info` broadcast command (workers online and what they serve).
DEFAULT_INCLUDE: tuple[str, ...] = ("workers.tasks", "workers.rounds", "workers.beat", "workers.control")
# Short GPU-bound tasks share the `predict` queue; rounds take hours and get their own queue so
# that a training worker never blocks interactive predictions (Celery optimizing.rst).
_PREDICT_TASKS = (PREDICT, EMBED, SCORE_POOL)
# The beat's checks take milliseconds: the predict queue serves them without waiting behind a round.
# So does `assistant doctor`'s image probe (no model, one image).
_CHECK_TASKS = (CHECK_ROUNDS, SCHEDULED_ROUNDS, PROBE_IMAGE)
_TRAIN_TASKS = (TRAIN_ROUND,)
_SETTINGS_ATTR = "assistant_settings"


def make_celery(settings: Settings, include: Sequence[str] = DEFAULT_INCLUDE, *, main: str = "assistant") -> Celery:
    """Build the Celery app from settings.

    Args:
        settings: Broker, result backend, time limits and the rest (``ASSISTANT_*``).
        include: Task modules the worker imports, as strings (imported only by workers).
        main: The app's name (shows in worker logs).

    Returns:
        A configured app. The settings are kept on it (:func:`settings_of`) so that tasks use the
        very settings the worker was started with (``assistant worker --device`` included).
    """
    app = Celery(main, broker=settings.broker_url, backend=settings.celery_result_backend, include=list(include))
    app.conf.update(_config(settings))
    setattr(app, _SETTINGS_ATTR, settings)
    return app


def settings_of(app: Celery) -> Settings:
    """The settings an app was built with (the process-wide settings for a foreign app)."""
    found = getattr(app, _SETTINGS_ATTR, None)
    return found if isinstance(found, Settings) else get_settings()


def _config(settings: Settings) -> dict[str, Any]:
    predict_limits = {
        "soft_time_limit": settings.predict_soft_time_limit_s,
        "time_limit": settings.predict_time_limit_s,
    }
    train_limits = {"soft_time_limit": settings.train_soft_time_limit_s, "time_limit": settings.train_time_limit_s}
    transport: dict[str, Any] = {
        # Redis redelivers an unacknowledged message after this long. It must exceed the longest
        # task, or a task still running would be handed to a second worker.
        "visibility_timeout": settings.broker_visibility_timeout_s,
        **settings.broker_transport_options,
    }
    result_transport: dict[str, Any] = {}
    if settings.redis_key_prefix:
        transport.setdefault("global_keyprefix", settings.redis_key_prefix)
        result_transport["global_keyprefix"] = settings.redis_key_prefix
    return {
        # JSON only: a pickle from the broker would run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Queues are created on first use (task_create_missing_queues), from these routes.
        "task_default_queue": QUEUE_PREDICT,
        "task_routes": {
            **{name: {"queue": QUEUE_PREDICT} for name in _PREDICT_TASKS},
            **{name: {"queue": QUEUE_TRAIN} for name in _TRAIN_TASKS},
            **{name: {"queue": QUEUE_PREDICT} for name in _CHECK_TASKS},
        },
        # Acknowledge after the task ran, and requeue when its process dies (OOM killer, a lost
        # GPU): our tasks are idempotent, so running one twice is safe while losing one is not.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a message is a whole batch (up to 1,024 images), and
        # a prefetched one would wait behind it instead of going to an idle worker.
        "worker_prefetch_multiplier": 1,
        # Per-task limits (enforced by the prefork pool; the solo pool cannot interrupt a task).
        "task_annotations": {
            **{name: dict(predict_limits) for name in _PREDICT_TASKS},
            **{name: dict(train_limits) for name in _TRAIN_TASKS},
        },
        # Results of batches nobody collected expire instead of filling Redis.
        "result_expires": settings.result_expires_s,
        # A queued task shows as STARTED once a worker picks it up (progress for bulk runs).
        "task_track_started": True,
        # Keep retrying the broker at start-up and after a Redis restart instead of exiting.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": transport,
        "result_backend_transport_options": result_transport,
        # Automatic rounds (workers/beat.py), run by `assistant beat`.
        "beat_schedule": beat_schedule(settings),
    }
