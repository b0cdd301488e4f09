"""The Celery beat schedule of automatic rounds, built from settings (light: celery only).

- every ``round_check_interval_s``: ``assistant.check_rounds`` queues a round for each project
  with at least ``round_threshold`` new corrections since its last round;
- on the ``round_schedule`` cron line: ``assistant.scheduled_rounds`` queues a round for each
  project with at least ``round_schedule_min_new`` new corrections;
- every ``effort_check_interval_s``: ``backends.count_effort`` counts every project's annotations
  the webhook's own requests left uncounted (``docs/preannotation.md``).

Both only *queue* rounds (``workers.beat``), under the per-project round lock, so a project never
has two rounds queued or running. Run the scheduler with ``assistant beat`` (one per deployment).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from state.contracts import CHECK_ROUNDS, COUNT_EFFORT, QUEUE_PREDICT, SCHEDULED_ROUNDS
from state.settings import Settings

__all__ = ["beat_schedule", "parse_cron"]

THRESHOLD_ENTRY = "assistant-round-threshold"
SCHEDULE_ENTRY = "assistant-round-schedule"
EFFORT_ENTRY = "assistant-effort-count"


def parse_cron(line: str) -> crontab:
    """A 5-field cron line (``minute hour day-of-month month day-of-week``, UTC) as a Celery schedule.

    Raises:
        ValueError: Not 5 fields, or a field Celery's crontab refuses.
    """
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"ASSISTANT_ROUND_SCHEDULE={line!r} is not a 5-field cron line. "
            "Fix: use 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *' for 03:00 UTC daily"
        )
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week
        )
    except (ValueError, TypeError) as exc:  # celery raises ValueError subclasses for bad fields
        raise ValueError(f"ASSISTANT_ROUND_SCHEDULE={line!r} is not a valid cron line: {exc}") from exc


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ``beat_schedule`` entries the settings ask for (empty when every trigger is off)."""
    schedule: dict[str, dict[str, Any]] = {}
    interval = settings.round_check_interval_s
    if settings.round_threshold > 0 and interval > 0:
        schedule[THRESHOLD_ENTRY] = {
            "task": CHECK_ROUNDS,
            "schedule": float(interval),
            # A check nobody ran before the next one is due is worthless: let it expire.
            "options": {"queue": QUEUE_PREDICT, "expires": float(interval)},
        }
    if settings.effort_check_interval_s > 0:
        # Counts what the webhook's own requests missed (a worker or Redis away at the time).
        schedule[EFFORT_ENTRY] = {
            "task": COUNT_EFFORT,
            "schedule": float(settings.effort_check_interval_s),
            "options": {"queue": QUEUE_PREDICT, "expires": float(settings.effort_check_interval_s)},
        }
    if settings.round_schedule.strip():
        schedule[SCHEDULE_ENTRY] = {
            "task": SCHEDULED_ROUNDS,
            "schedule": parse_cron(settings.round_schedule),
            "options": {"queue": QUEUE_PREDICT, "expires": 3600.0},
        }
    return schedule
