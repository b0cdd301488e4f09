"""A project's :class:`~assistant.agent_policy.Observation`: what the policy looks at.

Sources, all read-only:

================  ========================================================================
Label Studio      the config (vocabulary), the tasks (labeled or not, their queue rank), the
                  predictions (versions per task; per-tag scores for the disagreement check)
model registry    the checkpoint serving the project
corrections       new corrections since the last round, the watermark, the annotations
ledger            (for the disagreement check)
round lock        whether a round is queued or running (whoever queued it: START_TRAINING,
                  the beat, a person, the agent)
round log         the last finished round; rounds and GPU minutes today
decision log      the agent's memory: what it last predicted with, selected with, flagged,
                  the last guard event it logged
effort ledger     what pre-annotation saved annotators (edits per task against from scratch)
                  with the model in service, else with earlier ones; the guard's trips and
                  resumptions not logged yet; the project's latest calibration refit of the
                  checkpoint in service (an unlabeled task whose prediction an older
                  calibration chose counts as unpredicted: the agent's ``repredict`` replaces
                  it, ``backends.bulk``)
================  ========================================================================

**Disagreement.** An annotation is rated with :func:`assistant.label_quality.review_labels`
against the prediction its annotator started from (``parent_prediction``, else the task's latest
prediction): the per-tag scores and thresholds stored in that prediction's result items
(``backends.convert``), +1 for a chosen tag and -1 for every other scored one (the annotator saw
every option). No model runs: the scores are those of a model that had not trained on the
annotation, which is what a fair review needs. Annotations are rated once, as their ledger rows
arrive; a task whose prediction kept no scores (a prediction from before empty predictions carried
them) is not rated.

**The webhook.** Without the project's webhook, annotations never reach the ledger, so the agent
would never see a correction and never call a round. At a full look, at most every
``full_check_s`` per project, the observer asks Label Studio (``backends.webhook_check``) and logs
a warning with the fix when the webhook is missing.

**Cheap looks.** :meth:`Observer.changed` compares one Label Studio request (the project's
counters and config digest) and a few local reads with the last full look; the loop skips the full
look (and the policy) when nothing moved, the schedule did not fire and the day did not change.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from agent.decision_log import DecisionLog
from agent.studio import PredictionRow, ProjectSummary, StudioReader, TaskRow
from assistant.agent_policy import (
    PREDICTION_ACTIONS,
    Budget,
    Flag,
    GuardNote,
    LastRound,
    Memory,
    Observation,
    Saving,
)
from assistant.label_quality import review_labels
from backends.convert import SCORES_KEY, recalibration_of
from backends.predicting import checkpoint_version
from backends.webhook_check import WebhookCheck
from state.effort_summary import totals_of
from state.ledger import Ledger, LedgerEntry
from state.locks import RoundLocks
from state.registry import Registry
from state.round_log import read_round_log, round_log_path
from state.schedule import parse_cron
from studio.config import parse_label_config
from studio.controls import ProjectVocabulary
from studio.protocol import Annotation
from studio.results import annotation_to_correction

__all__ = [
    "Observer",
    "last_fire",
    "measured_saving",
    "memory_from_log",
    "parse_time",
    "rate_annotation",
]

logger = logging.getLogger(__name__)

# How far back the schedule is searched for its latest firing (a weekly cron fires within 7 days).
_SCHEDULE_LOOKBACK = dt.timedelta(days=8)
# Rounds whose durations estimate the next one's GPU minutes.
_ROUNDS_FOR_ESTIMATE = 3
# Agent actions whose wall time counts as GPU time (an upper bound: it includes queueing).
_GPU_ACTIONS = ("preannotate", "rescore", "repredict", "select")


def parse_time(text: Any) -> dt.datetime | None:
    """An ISO time as an aware datetime (naive ones are UTC); None when absent or malformed."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def last_fire(cron: str, now: dt.datetime, lookback: dt.timedelta = _SCHEDULE_LOOKBACK) -> dt.datetime | None:
    """The latest minute at or before ``now`` (UTC) that a 5-field cron line matches, within ``lookback``.

    Celery's parser and field semantics (``state.schedule.parse_cron``; day of week 0 = Sunday,
    every field must match).
    """
    spec = parse_cron(cron)
    t = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    end = t - lookback
    minute = dt.timedelta(minutes=1)
    while t > end:
        if t.hour not in spec.hour or t.day not in spec.day_of_month or t.month not in spec.month_of_year:
            t = t.replace(minute=0) - minute  # skip the rest of this hour
            continue
        if t.minute in spec.minute and (t.weekday() + 1) % 7 in spec.day_of_week:
            return t
        t -= minute
    return None


def memory_from_log(log: DecisionLog, project: int) -> Memory:
    """What the agent did before in a project: its last prediction and selection, what it flagged."""
    predicted = log.last(project, sorted(PREDICTION_ACTIONS))
    selected = log.last(project, ["select"])
    flagged: set[int] = set()
    for record in log.states(project):
        if record.decision.action == "review" and record.status == "done":
            flagged.update(int(f["task"]) for f in record.decision.params.get("flags", []))
    labels = predicted.decision.params.get("labels") if predicted else None
    guard = log.last(project, ["guard"])
    return Memory(
        predicted_checkpoint=str(predicted.decision.params.get("checkpoint")) if predicted else None,
        predicted_labels=tuple(str(x) for x in labels) if isinstance(labels, list) else None,
        predicted_calibration=_text(predicted.decision.params.get("calibration")) if predicted else None,
        selected_version=str(selected.decision.params.get("model_version")) if selected else None,
        flagged=frozenset(flagged),
        guard_seq=int(guard.decision.params.get("seq", 0)) if guard else 0,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def measured_saving(ledger: Ledger, project: int, checkpoint: str) -> Saving:
    """What pre-annotation saved annotators: with ``checkpoint`` when measured, else with earlier versions."""
    versions = ledger.effort.versions(project)
    mine = [v for v in versions if v.checkpoint == checkpoint]
    totals = totals_of(mine or versions)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return Saving(totals.tasks, r(totals.ratio), r(totals.saved_share), r(totals.precision), bool(mine) or not versions)


def rate_annotation(vocab: ProjectVocabulary, entry: LedgerEntry, prediction: PredictionRow) -> Flag | None:
    """The label quality of one annotation under the prediction its annotator saw (module docstring)."""
    event = entry.event
    if event.was_cancelled or event.task is None:
        return None
    try:
        annotation = Annotation.model_validate(
            {"id": event.annotation_id, "task": event.task, "result": event.result or []}
        )
    except ValidationError:
        return None
    chosen = {c.control: set(c.positives) for c in annotation_to_correction(vocab, annotation).controls}
    names: list[str] = []
    probs: list[float] = []
    targets: list[int] = []
    thresholds: list[float] = []
    multi = len(vocab.active) > 1
    for item in prediction.result:
        extras = item.get(SCORES_KEY)
        if not isinstance(extras, Mapping):
            continue
        control = str(item.get("from_name", ""))
        scores, limits = extras.get("scores") or {}, extras.get("thresholds") or {}
        for key, score in scores.items():
            if key not in limits:
                continue
            names.append(f"{control}:{key}" if multi else str(key))
            probs.append(float(score))
            thresholds.append(float(limits[key]))
            targets.append(1 if key in chosen.get(control, set()) else -1)
    if not names:
        return None
    review = review_labels(np.array([probs]), np.array([targets]), names, np.array(thresholds))
    worst = review.worst[0]
    why = worst.describe() if worst is not None else "no known tag"
    return Flag(task=event.task, annotation=event.annotation_id, quality=round(float(review.quality[0]), 4), why=why)


@dataclass
class _Ratings:
    upto: int = 0
    by_annotation: dict[int, Flag] = field(default_factory=dict)


@dataclass(frozen=True)
class _Look:
    counters: tuple[Any, ...]
    at: dt.datetime


class Observer:
    """Builds observations of projects (module docstring).

    Args:
        reader: Label Studio.
        registry: The model registry.
        ledger: The corrections ledger.
        locks: The round locks.
        log: The decision log (the agent's memory).
        models_dir: The registry's directory (round log).
        schedule: The agent's round schedule (a cron line; empty: none).
        flag_below: Ratings below this are reported as flags.
        full_check_s: The longest time between two full looks (:meth:`changed`).
        check_webhook: Says whether the project's annotations reach the backend
            (:func:`backends.webhook_check.check_webhook`); None: never checked.
    """

    def __init__(
        self,
        reader: StudioReader,
        registry: Registry,
        ledger: Ledger,
        locks: RoundLocks,
        log: DecisionLog,
        *,
        models_dir: Path,
        schedule: str = "",
        flag_below: float = 0.3,
        full_check_s: float = 600.0,
        check_webhook: Callable[[int], WebhookCheck] | None = None,
    ) -> None:
        self.reader, self.registry, self.ledger, self.locks, self.log = reader, registry, ledger, locks, log
        self.check_webhook = check_webhook
        self._webhook_checked: dict[int, dt.datetime] = {}
        self.models_dir = models_dir
        self.schedule = schedule.strip()
        self.flag_below = flag_below
        self.full_check_s = full_check_s
        self._looks: dict[int, _Look] = {}
        self._ratings: dict[int, _Ratings] = {}
        self._failed_rounds_told: set[tuple[int, str]] = set()

    # --- the cheap look ----------------------------------------------------------------------
    def _counters(self, project: int, summary: ProjectSummary) -> tuple[Any, ...]:
        log_path = round_log_path(self.models_dir, project)
        last = self.log.records(project, limit=1, newest=True)
        return (
            *summary.counters(),
            checkpoint_version(self.registry, project),
            self.ledger.count(project),
            self.ledger.effort.last_guard_event(project),
            self._calibration(project, checkpoint_version(self.registry, project)),
            log_path.stat().st_size if log_path.is_file() else 0,
            self.locks.holder(project),
            last[0].seq if last else 0,
        )

    def changed(self, project: int, now: dt.datetime) -> bool:
        """Whether a full look is needed: something moved, the schedule fired, a new day, or it is time."""
        look = self._looks.get(project)
        if look is None or (now - look.at).total_seconds() >= self.full_check_s or now.date() != look.at.date():
            return True
        if self.schedule:
            fired = last_fire(self.schedule, now)
            if fired is not None and fired > look.at:
                return True
        return self._counters(project, self.reader.summary(project)) != look.counters

    # --- the full look -----------------------------------------------------------------------
    def observe(self, project: int, now: dt.datetime, events: Sequence[str] = ()) -> Observation:
        """Look at everything (module docstring) and build the observation."""
        self._watch_webhook(project, now)
        summary = self.reader.summary(project)
        vocab = parse_label_config(summary.label_config)
        checkpoint = checkpoint_version(self.registry, project)
        version = vocab.model_version(checkpoint)
        tasks = self.reader.tasks(project)
        predictions = self.reader.predictions(project)
        calibration = self._calibration(project, checkpoint)
        # An unlabeled task is predicted when it has a prediction for the version that the
        # project's latest calibration refit chose (None: the checkpoint's own calibration).
        current: set[int] = {
            p.task for p in predictions if p.model_version == version and recalibration_of(p.result) == calibration
        }
        unlabeled = [t for t in tasks if not t.labeled]
        rounds = read_round_log(self.models_dir, project)
        holder = self.locks.holder(project)
        memory = self._memory(project)
        # Rating the new ledger rows also finds the ledger's newest row (a round decision's identity).
        flags = self._flags(project, vocab, predictions)
        obs = Observation(
            project=project,
            now=now,
            checkpoint=checkpoint,
            labels=tuple(vocab.labels),
            tasks=len(tasks),
            unlabeled=len(unlabeled),
            calibration=calibration,
            unpredicted=tuple(sorted(t.id for t in unlabeled if t.id not in current)),
            queue=sum(1 for t in unlabeled if t.rank is not None),
            new_corrections=self.ledger.count_since_last_round(project),
            watermark=self._ratings[project].upto,
            round_holder=holder,
            last_round=_last_round(rounds),
            schedule_fired_at=last_fire(self.schedule, now) if self.schedule else None,
            flags=flags,
            rated=len(self._ratings[project].by_annotation),
            memory=memory,
            budget=self._budget(project, now, rounds),
            events=tuple(events),
            saving=measured_saving(self.ledger, project, checkpoint),
            guard_events=tuple(
                GuardNote(e.seq, e.tag, e.event, e.reason)
                for e in self.ledger.effort.guard_events(project, after=memory.guard_seq, limit=200)
            ),
        )
        # What changed since this look is compared against the state *before* acting on it.
        self._looks[project] = _Look(self._counters(project, summary), now)
        self._tell_failed_round(project, obs.last_round)
        return obs

    def _tell_failed_round(self, project: int, last: LastRound | None) -> None:
        """Say once in the agent's log that the project's last round failed, and why (issue 16)."""
        if last is None or last.status != "failed" or (project, last.round_id) in self._failed_rounds_told:
            return
        self._failed_rounds_told.add((project, last.round_id))
        logger.warning(
            "project %s: round %s (%s) failed at %s: %s",
            project,
            last.round_id,
            last.trigger,
            last.finished_at.isoformat(timespec="seconds"),
            last.reason,
        )

    def _watch_webhook(self, project: int, now: dt.datetime) -> None:
        """Warn in the log when the project's annotations do not reach the backend (module docstring)."""
        last = self._webhook_checked.get(project)
        if self.check_webhook is None or (last is not None and (now - last).total_seconds() < self.full_check_s):
            return
        self._webhook_checked[project] = now
        try:
            found = self.check_webhook(project)
        except Exception as exc:  # Label Studio down: the look itself will say so
            logger.warning("project %s: could not check its webhook: %s", project, exc)
            return
        if found.problem is not None:
            logger.warning("%s", found.problem.message)  # it names the project

    def tasks(self, project: int) -> list[TaskRow]:
        """The project's tasks (the executors re-read them before acting)."""
        return self.reader.tasks(project)

    def _calibration(self, project: int, checkpoint: str) -> str | None:
        """The id of the project's latest fitted refit of ``checkpoint`` (None: its own calibration)."""
        refit = self.ledger.effort.last_refit(project, checkpoint, fitted_only=True)
        return None if refit is None else refit.id

    def _memory(self, project: int) -> Memory:
        return memory_from_log(self.log, project)

    def _budget(self, project: int, now: dt.datetime, rounds: Sequence[Mapping[str, Any]]) -> Budget:
        day = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)
        minutes, today, durations = 0.0, 0, []
        for entry in rounds:
            started, finished = parse_time(entry.get("started_at")), parse_time(entry.get("finished_at"))
            if started is None or finished is None:
                continue
            length = max(0.0, (finished - started).total_seconds() / 60.0)
            if entry.get("status") in ("promoted", "kept"):
                durations.append(length)
            if finished >= day:
                today += 1
                minutes += length
        for record in self.log.done_since(project, day, _GPU_ACTIONS):
            minutes += float(record.outcome.get("seconds", 0.0)) / 60.0
        recent = durations[-_ROUNDS_FOR_ESTIMATE:]
        return Budget(gpu_minutes=minutes, rounds=today, round_minutes=sum(recent) / len(recent) if recent else None)

    def _flags(self, project: int, vocab: ProjectVocabulary, predictions: Sequence[PredictionRow]) -> tuple[Flag, ...]:
        ratings = self._ratings.setdefault(project, _Ratings())
        by_id = {p.id: p for p in predictions}
        latest: dict[int, PredictionRow] = {}
        for pred in predictions:  # the listing is in creation order: the last one wins
            latest[pred.task] = pred
        entries = self.ledger.entries(project, since=ratings.upto)
        for entry in entries:
            event, aid = entry.event, entry.event.annotation_id
            ratings.upto = max(ratings.upto, entry.seq)
            if aid is None:
                continue
            if entry.deleted:
                ratings.by_annotation.pop(aid, None)
                continue
            parent = by_id.get(event.parent_prediction) if event.parent_prediction is not None else None
            prediction = parent or latest.get(event.task or -1)
            flag = rate_annotation(vocab, entry, prediction) if prediction is not None else None
            if flag is None:
                ratings.by_annotation.pop(aid, None)
            else:
                ratings.by_annotation[aid] = flag
        return tuple(f for f in ratings.by_annotation.values() if f.quality < self.flag_below)


def _last_round(rounds: Sequence[Mapping[str, Any]]) -> LastRound | None:
    for entry in reversed(rounds):
        finished = parse_time(entry.get("finished_at"))
        if finished is None:
            continue
        return LastRound(
            round_id=str(entry.get("round_id") or ""),
            status=str(entry.get("status") or ""),
            trigger=str(entry.get("trigger") or ""),
            finished_at=finished,
            version=str(entry.get("current_version") or ""),
            reason=str(entry.get("reason") or ""),
        )
    return None
