"""The agent's policy: what to do next in a labeling project, and why. Pure: stdlib only.

The agent (``agent/``) runs one loop per project: **observe** the project (Label Studio, the
corrections ledger, the model registry, the round lock), **decide** with :meth:`Policy.decide`,
**execute** each decision through the existing components, and write every decision and its
outcome to the decision log. This module is the *decide* step, and nothing else: a function of an
:class:`Observation` to a list of :class:`Decision`, with all its settings in one
:class:`PolicyConfig`. It reads no clock, no network and no disk, so it is tested exhaustively
without services, and the offline simulation (``benchworld/simulation/agent.py``) runs the very
same object as production.

The rules, in the order the decisions are executed within one step:

==================  =========================================================================
prediction          One of, by cause (first match):

                    - ``rescore``: the labeling config's vocabulary differs from the one the
                      agent last predicted with (a tag added or removed). Unlabeled tasks are
                      scored again; the workers serve the image features from their cache, so
                      only the new label texts are encoded.
                    - ``repredict``: the model in service differs from the one the agent last
                      predicted with (a round promoted a candidate, or someone rolled back), or
                      the project's calibration of it was refit from new annotations since
                      (:attr:`Observation.calibration`): the tasks in front of the annotators
                      then show what the refit map expects to save.
                    - ``preannotate``: unlabeled tasks have no prediction for the current
                      version (new imports), or the agent looks at the project for the first
                      time.

                    ``rescore`` and ``repredict`` are decided even when no task is left to
                    score, so that the log records the change and the agent's memory moves on.
``review``          Annotations the model strongly disagrees with (label quality of the
                    annotation under the prediction the annotator saw, below
                    ``review_quality``), never flagged before: queued for review, the worst
                    first, as long as at most ``review_fraction`` of the rated annotations
                    were ever flagged (a model that disagrees with everything, early or
                    uncalibrated, must not flood the reviewers).
``train``           No round queued or running, and either ``round_threshold`` new corrections
                    since the last round, or the ``schedule`` fired since the last round with at
                    least ``schedule_min_new`` new corrections. Deferred (logged once per day and
                    reason, not run) when the last round finished less than
                    ``min_round_interval_s`` ago, when ``max_rounds_per_day`` rounds already ran
                    today, or when the GPU minutes used today plus the round's estimate exceed
                    ``gpu_minutes_per_day``.
``select``          Unlabeled tasks outside the queue exist, and the queue in front of the
                    annotators (unlabeled tasks of the last selection) is below
                    ``queue_low_water``, or the model or the vocabulary changed since the last
                    selection (a promotion re-orders the queue).
==================  =========================================================================

Before them, one ``guard`` decision per trip or resumption of the per-tag guard the agent has not
logged yet (:attr:`Observation.guard_events`): the guard acts by itself when annotations are
counted; these decisions only write why into the decision log.

**What pre-annotation saves.** When the observation carries the effort ledger's measurement
(:attr:`Observation.saving`), every prediction decision says what the model in service is
expected to save annotators (its edits per task against labeling from scratch so far), and every
decision records it in what it saw. Without it (the offline simulations that do not measure),
the reasons are as before.

START_TRAINING from Label Studio and the beat's rounds are queued by the backend and the beat
themselves; the policy sees them as a busy round lock (no second round) and reacts to their
promotion like to its own.

**Idempotence.** Every decision carries a deterministic :attr:`Decision.key` built from what it
acts on (action, project, version, a digest of the task set or the ledger watermark). The loop
persists the decision under its key before acting and skips keys already done, so the same
observation never runs the same action twice, and a restarted agent resumes the keys left pending.

Example:
    >>> policy = Policy(PolicyConfig(round_threshold=50))
    >>> obs = Observation(project=3, now=dt.datetime(2026, 3, 2, tzinfo=dt.UTC), checkpoint="base-1",
    ...                   labels=("cat", "dog"), tasks=10, unlabeled=10, unpredicted=tuple(range(1, 11)))
    >>> [d.action for d in policy.decide(obs)]
    ['preannotate', 'select']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

__all__ = [
    "ACTIONS",
    "PREDICTION_ACTIONS",
    "Action",
    "Budget",
    "Decision",
    "Flag",
    "GuardNote",
    "LastRound",
    "Memory",
    "Observation",
    "Policy",
    "PolicyConfig",
    "Saving",
    "task_digest",
    "vocabulary_fingerprint",
]

Action = Literal["guard", "preannotate", "rescore", "repredict", "review", "train", "select", "promote", "rollback"]
#: Every action, in execution order within one step; the last two are never decided by the policy:
#: people take them from the dashboard (``dashboard/``), which logs them ``done`` for the story.
#: The decision log's store (``state.decision_log.DECISION_ACTIONS``) lists them too, for the web tier,
#: which cannot import the core; ``tests/agent/test_decision_log.py`` keeps the two equal.
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
#: The actions that post predictions (their decisions carry the version and the labels).
PREDICTION_ACTIONS: Final[frozenset[str]] = frozenset({"preannotate", "rescore", "repredict"})
# Task ids shown in a decision's log entry (the digest covers the whole set).
_IDS_SHOWN: Final = 20


def vocabulary_fingerprint(labels: Sequence[str]) -> str:
    """The 8-hex fingerprint of an ordered label list (as ``state.contracts.vocabulary_fingerprint``).

    Duplicated here because ``assistant`` imports nothing from ``workers``; a test checks that
    both agree.
    """
    return hashlib.sha256("\x1f".join(labels).encode("utf-8")).hexdigest()[:8]


def task_digest(task_ids: Iterable[int]) -> str:
    """A 12-hex digest of a set of task ids (order-free): part of a decision's key."""
    text = ",".join(str(t) for t in sorted(set(task_ids)))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


@dataclass(frozen=True)
class PolicyConfig:
    """Every knob of the policy, in one place (``ASSISTANT_AGENT_*`` in production: ``agent/settings.py``).

    Attributes:
        round_threshold: New corrections since the last round that call for a round; 0: never by
            count.
        schedule_min_new: New corrections a scheduled round needs (the schedule itself is observed:
            :attr:`Observation.schedule_fired_at`).
        min_round_interval_s: Seconds that must pass between the end of a round and the next one.
        queue_low_water: Below this many unlabeled tasks left in the selected queue, select the
            next batch.
        batch_size: Tasks chosen per selection.
        strategy: The selection strategy (``assistant.selection``: random, uncertainty, entropy,
            novelty, diversity, hybrid, saving); ``saving`` (the hybrid weighted by each image's
            expected saving from pre-annotation) was selected on the agent simulation's tuning
            seeds (docs/preannotation.md).
        reselect_on_change: Select again after a promotion or a vocabulary change, even when the
            queue is not low (the new model orders it better).
        review_quality: Annotations whose label quality (``assistant.label_quality``) under the
            prediction the annotator saw is below this are flagged for review. 0.3 flags an
            annotation whose worst tag the model gives less than ~12% chance of being right
            (image quality is ~0.2 + 0.8 x the worst tag's when the other tags agree).
        review_max: Flags per review decision (the worst first).
        review_fraction: At most this share of the rated annotations is ever flagged (rounded up,
            so the first strong disagreement is flagged at once).
        gpu_minutes_per_day: Rounds are deferred when the GPU minutes used today (rounds, and the
            agent's prediction and selection jobs) plus a round's estimate exceed this; 0: no limit.
            Pre-annotation is never deferred: annotators wait for it.
        max_rounds_per_day: Rounds per UTC day (every trigger counts); 0: no limit.
        round_minutes_estimate: A round's GPU minutes before any round was measured.
        max_attempts: Tries of a failed decision (the loop retries its key).
        retry_after_s: Seconds between two tries of a failed decision.
    """

    round_threshold: int = 50
    schedule_min_new: int = 1
    min_round_interval_s: float = 0.0
    queue_low_water: int = 20
    batch_size: int = 100
    strategy: str = "saving"
    reselect_on_change: bool = True
    review_quality: float = 0.3
    review_max: int = 100
    review_fraction: float = 0.05
    gpu_minutes_per_day: float = 0.0
    max_rounds_per_day: int = 0
    round_minutes_estimate: float = 30.0
    max_attempts: int = 3
    retry_after_s: float = 300.0

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (the log and ``assistant agent policy``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Flag:
    """An annotation the model strongly disagrees with.

    Attributes:
        task: The task.
        annotation: The annotation.
        quality: Its label quality in [0, 1] (low: the model disagrees).
        why: The worst tag, e.g. ``possibly missing 'zebra' (model 0.93, threshold 0.41)``.
    """

    task: int
    annotation: int | None
    quality: float
    why: str


@dataclass(frozen=True)
class LastRound:
    """The project's last finished round (the round log), whoever started it.

    Attributes:
        round_id: ``r0007``.
        status: ``promoted``, ``kept``, ``skipped``, ``busy`` or ``failed``.
        trigger: ``agent``, ``threshold``, ``schedule``, ``start_training``, ``manual``.
        finished_at: When it finished (UTC).
        version: The version serving after it.
        reason: The round's decision, or why it failed.
    """

    round_id: str
    status: str
    trigger: str
    finished_at: dt.datetime
    version: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Saving:
    """What pre-annotation saved annotators, measured (the effort ledger).

    Attributes:
        tasks: Annotated tasks measured.
        ratio: Edits against edits from scratch (below 1: work saved).
        saved_share: ``1 - ratio`` (negative: pre-annotation cost more).
        precision: Share of shown tags kept.
        in_service: True when measured on the model in service, False when on earlier versions
            only (the model in service has no measured annotation yet).
    """

    tasks: int
    ratio: float | None
    saved_share: float | None
    precision: float | None = None
    in_service: bool = True

    def describe(self, checkpoint: str) -> str:
        """For a decision's reason."""
        if self.tasks == 0 or self.ratio is None or self.saved_share is None:
            return f"no annotation has measured what {checkpoint} saves annotators yet"
        whose = checkpoint if self.in_service else f"earlier models ({checkpoint} not measured yet)"
        precision = "" if self.precision is None else f", {self.precision:.0%} of shown tags kept"
        verb = "saved" if self.saved_share >= 0 else "cost"
        return (
            f"{whose} {verb} annotators {abs(self.saved_share):.0%} of their edits on {self.tasks} tasks "
            f"({self.ratio:.2f}x labeling from scratch{precision})"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GuardNote:
    """A trip or resumption of the per-tag guard, as the effort ledger recorded it.

    Attributes:
        seq: Its position in the project's guard events.
        tag: The tag.
        event: ``tripped`` (no longer shown) or ``resumed``.
        reason: Why (counts, interval, break-even; or what resumed it).
    """

    seq: int
    tag: str
    event: str
    reason: str


@dataclass(frozen=True)
class Budget:
    """What today (UTC) has used.

    Attributes:
        gpu_minutes: GPU minutes used today: rounds (every trigger) and the agent's jobs.
        rounds: Rounds finished today (every trigger).
        round_minutes: A round's expected GPU minutes (the recent rounds' mean), if measured.
    """

    gpu_minutes: float = 0.0
    rounds: int = 0
    round_minutes: float | None = None


@dataclass(frozen=True)
class Memory:
    """What the agent did before (read back from its decision log).

    Attributes:
        predicted_checkpoint: The checkpoint of its last prediction decision.
        predicted_labels: The vocabulary of its last prediction decision (None: it never
            looked at the project).
        predicted_calibration: The project calibration of its last prediction decision (None:
            the model's own).
        selected_version: The full model version of its last selection.
        flagged: Tasks it ever queued for review (never flagged twice).
        guard_seq: The last guard event it logged.
    """

    predicted_checkpoint: str | None = None
    predicted_labels: tuple[str, ...] | None = None
    predicted_calibration: str | None = None
    selected_version: str | None = None
    flagged: frozenset[int] = frozenset()
    guard_seq: int = 0


@dataclass(frozen=True)
class Observation:
    """Everything the policy looks at, for one project at one moment.

    Attributes:
        project: The Label Studio project.
        now: The moment (UTC, timezone-aware).
        checkpoint: The checkpoint version serving the project (the registry's ``current``).
        calibration: The project's own calibration of that checkpoint, refit from its
            annotations (an id that changes at every refit); None while the checkpoint's own
            calibration serves.
        labels: The labeling config's model labels, in order.
        tasks: Tasks in the project.
        unlabeled: Tasks without an annotation.
        unpredicted: Unlabeled tasks without a prediction for the current version made with
            ``calibration`` (a prediction an older calibration chose is stale).
        queue: Unlabeled tasks of the last selection (the queue in front of the annotators).
        new_corrections: Corrections-ledger rows since the last round.
        watermark: The ledger's newest row (a round decision's identity).
        round_holder: Who holds the project's round lock (a round is queued or running), if anyone.
        last_round: The last finished round.
        schedule_fired_at: The latest time the round schedule fired, if a schedule is set.
        flags: Annotations the model strongly disagrees with (not yet filtered by memory).
        rated: Annotations rated for disagreement so far (flagged or not).
        memory: What the agent did before.
        budget: Today's use.
        events: Label Studio events that woke the agent since its last look (context only).
        saving: What pre-annotation saved annotators so far (None: not measured here).
        guard_events: The guard's trips and resumptions, oldest first.
    """

    project: int
    now: dt.datetime
    checkpoint: str
    labels: tuple[str, ...]
    calibration: str | None = None
    tasks: int = 0
    unlabeled: int = 0
    unpredicted: tuple[int, ...] = ()
    queue: int = 0
    new_corrections: int = 0
    watermark: int = 0
    round_holder: str | None = None
    last_round: LastRound | None = None
    schedule_fired_at: dt.datetime | None = None
    flags: tuple[Flag, ...] = ()
    rated: int = 0
    memory: Memory = field(default_factory=Memory)
    budget: Budget = field(default_factory=Budget)
    events: tuple[str, ...] = ()
    saving: Saving | None = None
    guard_events: tuple[GuardNote, ...] = ()

    @property
    def fingerprint(self) -> str:
        """The vocabulary's fingerprint."""
        return vocabulary_fingerprint(self.labels)

    @property
    def model_version(self) -> str:
        """The version Label Studio sees (``<checkpoint>+<fingerprint>``)."""
        return f"{self.checkpoint}+{self.fingerprint}"

    def summary(self) -> dict[str, Any]:
        """What every decision's log entry records as "what it saw" (small, JSON-ready)."""
        out: dict[str, Any] = {
            "at": self.now.isoformat(timespec="seconds"),
            "model_version": self.model_version,
            "labels": len(self.labels),
            "tasks": self.tasks,
            "unlabeled": self.unlabeled,
            "unpredicted": len(self.unpredicted),
            "queue": self.queue,
            "new_corrections": self.new_corrections,
            "watermark": self.watermark,
            "round": self.round_holder or "free",
            "gpu_minutes_today": round(self.budget.gpu_minutes, 1),
            "rounds_today": self.budget.rounds,
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.last_round is not None:
            last = self.last_round
            out["last_round"] = f"{last.round_id} {last.status} ({last.trigger})"
            if last.status == "failed":
                out["last_round"] += f": {last.reason[:300]}"
        if self.events:
            out["events"] = sorted(set(self.events))
        if self.saving is not None:
            out["saving"] = self.saving.to_json()
        return out


Status = Literal["decided", "deferred"]


@dataclass(frozen=True)
class Decision:
    """One thing to do (or deliberately not to do), with its reason.

    Attributes:
        action: What.
        project: Where.
        key: Deterministic identity: the same situation gives the same key (module docstring).
        reason: Why, for people.
        params: What the executor needs (JSON-ready).
        saw: What the policy looked at (JSON-ready; :meth:`Observation.summary` plus specifics).
        status: ``decided`` (execute it) or ``deferred`` (a limit forbids it now; logged only).
    """

    action: Action
    project: int
    key: str
    reason: str
    params: Mapping[str, Any] = field(default_factory=dict)
    saw: Mapping[str, Any] = field(default_factory=dict)
    status: Status = "decided"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the decision log stores it)."""
        return {
            "action": self.action,
            "project": self.project,
            "key": self.key,
            "reason": self.reason,
            "params": dict(self.params),
            "saw": dict(self.saw),
            "status": self.status,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Decision:
        """The inverse of :meth:`to_json`."""
        action = str(doc["action"])
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        status = str(doc.get("status", "decided"))
        return cls(
            action=action,
            project=int(doc["project"]),
            key=str(doc["key"]),
            reason=str(doc.get("reason", "")),
            params=dict(doc.get("params") or {}),
            saw=dict(doc.get("saw") or {}),
            status="deferred" if status == "deferred" else "decided",
        )


def _json_safe(value: Any) -> Any:
    # Params go through JSON in the log: make sure they survive it unchanged.
    return json.loads(json.dumps(value))


def _diff(before: Sequence[str], after: Sequence[str]) -> str:
    added = [label for label in after if label not in set(before)]
    removed = [label for label in before if label not in set(after)]
    parts = []
    if added:
        parts.append("added " + ", ".join(repr(a) for a in added[:10]) + (" ..." if len(added) > 10 else ""))
    if removed:
        parts.append("removed " + ", ".join(repr(r) for r in removed[:10]) + (" ..." if len(removed) > 10 else ""))
    return "; ".join(parts) or "labels reordered"


class Policy:
    """Decides what the agent does next (module docstring).

    Args:
        config: The settings.
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()

    def decide(self, obs: Observation) -> list[Decision]:
        """The decisions for one observation, in execution order (module docstring)."""
        found = [self._prediction(obs), self._review(obs), self._train(obs), self._select(obs)]
        return [*self._guard(obs), *(d for d in found if d is not None)]

    # --- guard -------------------------------------------------------------------------------
    def _guard(self, obs: Observation) -> list[Decision]:
        out = []
        for note in obs.guard_events:
            if note.seq <= obs.memory.guard_seq:
                continue
            what = "stopped showing" if note.event == "tripped" else "shows again"
            reason = f"the guard {what} {note.tag!r} in project {obs.project}: {note.reason}"
            params = {"tag": note.tag, "event": note.event, "seq": note.seq}
            key = f"guard:p{obs.project}:e{note.seq}"
            out.append(Decision("guard", obs.project, key, reason, _json_safe(params), obs.summary()))
        return out

    # --- prediction --------------------------------------------------------------------------
    def _prediction(self, obs: Observation) -> Decision | None:
        memory = obs.memory
        pending = len(obs.unpredicted)
        action: Action
        if memory.predicted_labels is None:
            action = "preannotate"
            reason = (
                f"first look at project {obs.project}: {pending} of {obs.tasks} tasks are unlabeled without a "
                f"prediction for {obs.model_version}"
                if pending
                else f"first look at project {obs.project} ({obs.tasks} tasks): nothing to pre-annotate yet"
            )
        elif tuple(memory.predicted_labels) != obs.labels:
            action = "rescore"
            reason = (
                f"the labeling config changed ({_diff(memory.predicted_labels, obs.labels)}): re-scoring {pending} "
                f"unlabeled tasks with {obs.model_version}; the image features come from the workers' cache, "
                "so only the label texts are encoded"
            )
        elif memory.predicted_checkpoint != obs.checkpoint:
            action = "repredict"
            origin = ""
            if obs.last_round is not None and obs.last_round.version == obs.checkpoint:
                origin = f" (round {obs.last_round.round_id}, {obs.last_round.trigger}, {obs.last_round.status})"
            reason = (
                f"the model in service changed from {memory.predicted_checkpoint} to {obs.checkpoint}{origin}: "
                f"re-predicting {pending} unlabeled tasks"
            )
        elif obs.calibration is not None and obs.calibration != memory.predicted_calibration:
            action = "repredict"
            reason = (
                f"the project's calibration of {obs.checkpoint} was refit from its annotations ({obs.calibration}): "
                f"re-predicting {pending} unlabeled tasks, so that they show the tags the refit map expects to save "
                "edits on"
            )
        elif pending:
            action = "preannotate"
            reason = f"{pending} unlabeled tasks have no prediction for {obs.model_version} (new imports)"
        else:
            return None
        params = {
            "model_version": obs.model_version,
            "checkpoint": obs.checkpoint,
            "fingerprint": obs.fingerprint,
            "labels": list(obs.labels),
            "tasks": pending,
            "task_digest": task_digest(obs.unpredicted),
            "task_ids": sorted(obs.unpredicted)[:_IDS_SHOWN],
        }
        if obs.saving is not None:
            reason = f"{reason}; {obs.saving.describe(obs.checkpoint)}"
            params["expected_saving"] = obs.saving.to_json()
        key = f"{action}:p{obs.project}:{obs.model_version}:{params['task_digest']}"
        if obs.calibration is not None:
            params["calibration"] = obs.calibration
            key += f":{obs.calibration}"
        return Decision(action, obs.project, key, reason, _json_safe(params), obs.summary())

    # --- review ------------------------------------------------------------------------------
    def _review(self, obs: Observation) -> Decision | None:
        cfg = self.config
        allowed = math.ceil(cfg.review_fraction * max(obs.rated, len(obs.flags))) - len(obs.memory.flagged)
        fresh = sorted(
            (f for f in obs.flags if f.task not in obs.memory.flagged and f.quality < cfg.review_quality),
            key=lambda f: (f.quality, f.task),
        )[: max(0, min(cfg.review_max, allowed))]
        if not fresh:
            return None
        reason = (
            f"{len(fresh)} annotations the model strongly disagrees with (label quality below {cfg.review_quality}); "
            f"worst: task {fresh[0].task}, {fresh[0].why}"
        )
        params = {
            "flags": [{"task": f.task, "annotation": f.annotation, "quality": f.quality, "why": f.why} for f in fresh]
        }
        key = f"review:p{obs.project}:{task_digest(f.task for f in fresh)}"
        return Decision("review", obs.project, key, reason, _json_safe(params), obs.summary())

    # --- train -------------------------------------------------------------------------------
    def _train(self, obs: Observation) -> Decision | None:
        cfg = self.config
        if obs.round_holder is not None:
            return None  # one round at a time; its promotion shows up as a new checkpoint
        last = obs.last_round
        trigger: str | None = None
        if cfg.round_threshold > 0 and obs.new_corrections >= cfg.round_threshold:
            trigger = "threshold"
            why = f"{obs.new_corrections} new corrections since the last round (threshold {cfg.round_threshold})"
        elif (
            obs.schedule_fired_at is not None
            and (last is None or obs.schedule_fired_at > last.finished_at)
            and obs.new_corrections >= max(1, cfg.schedule_min_new)
        ):
            trigger = "schedule"
            why = (
                f"the round schedule fired at {obs.schedule_fired_at.isoformat(timespec='minutes')} with "
                f"{obs.new_corrections} new corrections"
            )
        if trigger is None:
            return None
        params = {"trigger": trigger, "watermark": obs.watermark, "new_corrections": obs.new_corrections}
        saw = obs.summary()
        limit = self._round_limit(obs)
        if limit is not None:
            kind, detail = limit
            day = obs.now.date().isoformat()
            key = f"train-deferred:p{obs.project}:{day}:{kind}"
            return Decision("train", obs.project, key, f"{why}, but {detail}", _json_safe(params), saw, "deferred")
        key = f"train:p{obs.project}:w{obs.watermark}"
        return Decision("train", obs.project, key, f"{why}: running a round", _json_safe(params), saw)

    def _round_limit(self, obs: Observation) -> tuple[str, str] | None:
        """Why a due round must wait (kind, text), or None."""
        cfg, budget, last = self.config, obs.budget, obs.last_round
        if cfg.min_round_interval_s > 0 and last is not None:
            elapsed = (obs.now - last.finished_at).total_seconds()
            if elapsed < cfg.min_round_interval_s:
                return (
                    f"interval-{last.round_id}",
                    f"the last round ({last.round_id}) finished {elapsed / 60:.0f} min ago, less than the "
                    f"minimum interval of {cfg.min_round_interval_s / 60:.0f} min: deferred",
                )
        if cfg.max_rounds_per_day > 0 and budget.rounds >= cfg.max_rounds_per_day:
            return "rounds", f"{budget.rounds} rounds ran today (limit {cfg.max_rounds_per_day}): deferred to tomorrow"
        if cfg.gpu_minutes_per_day > 0:
            estimate = budget.round_minutes if budget.round_minutes is not None else cfg.round_minutes_estimate
            if budget.gpu_minutes + estimate > cfg.gpu_minutes_per_day:
                return (
                    "gpu",
                    f"{budget.gpu_minutes:.0f} GPU minutes used today and a round takes ~{estimate:.0f} "
                    f"(budget {cfg.gpu_minutes_per_day:.0f} per day): deferred to tomorrow",
                )
        return None

    # --- select ------------------------------------------------------------------------------
    def _select(self, obs: Observation) -> Decision | None:
        cfg = self.config
        outside = obs.unlabeled - obs.queue
        if obs.unlabeled <= 0:
            return None
        previous = obs.memory.selected_version
        why = None
        if previous is None:
            why = f"no queue yet: choosing the first {cfg.batch_size} of {obs.unlabeled} unlabeled tasks"
        elif obs.queue < cfg.queue_low_water and outside > 0:
            why = (
                f"the queue in front of the annotators is low ({obs.queue} unlabeled tasks left, low-water mark "
                f"{cfg.queue_low_water}): choosing the next {cfg.batch_size}"
            )
        elif cfg.reselect_on_change and previous != obs.model_version:
            change = "model in service" if previous.partition("+")[0] != obs.checkpoint else "vocabulary"
            why = (
                f"the {change} changed since the last selection ({previous} -> {obs.model_version}): "
                "re-ordering the queue"
            )
        if why is None:
            return None
        params = {"k": cfg.batch_size, "strategy": cfg.strategy, "model_version": obs.model_version}
        key = f"select:p{obs.project}:{obs.model_version}:u{obs.unlabeled}"
        return Decision("select", obs.project, key, f"{why} ({cfg.strategy})", _json_safe(params), obs.summary())
