"""Acting on the effort ledger: refit a project's calibration, and trip or resume the per-tag guard.

Run after every counting pass (``backends.effort``), for the checkpoint serving the project:

**Refit** (:func:`refit_if_due`). Once ``ASSISTANT_RECALIBRATION_EVERY`` annotations of that
checkpoint were counted since its last refit, a new one is fitted
(:func:`preannotation.fit_recalibration`) on the newest ``ASSISTANT_RECALIBRATION_MAX_PAIRS``
(tag, probability, answer) pairs. The probabilities are **the model's own** (the prediction's
``model_scores`` when a refit had served it, its ``scores`` otherwise), never a refit's output, so
every refit maps the model's probabilities and nothing is composed twice. It is stored per
project and checkpoint (``recalibrations``) and the backend applies it from its next prediction
on; a promoted checkpoint starts again from its own calibration. A refit that fails is stored as
``failed`` with the reason: ``assistant status`` and ``/metrics`` show it, and the next one is
tried after as many new annotations again.

**Guard** (:func:`judge_guard`). Per tag, the showings of the serving checkpoint (kept +
removed, from ``effort_totals``) since the tag's current judgement started are judged by
:func:`preannotation.judge_tag`: a tag whose keep rate is confidently below the break-even point
of **its** edit costs trips, and the backend stops showing it. A tag's costs are those its
predictions are served with: its control's ``model_cost_*`` knobs in the labeling config, else
the project's costs. A tripped tag resumes when

- another checkpoint serves the project (a promotion or a rollback): its counts start again under
  the new one; or
- a refit predicts its tripping showings better than the probabilities served then
  (:func:`preannotation.guard.brier_scores` on the tag's showings since its judgement started),
  and its counts start again.

Every trip and resumption is an event with the reason (``guard_events``), which the agent writes
into its decision log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from preannotation import EditCosts, GuardConfig, RecalibrationConfig, fit_recalibration, judge_tag
from preannotation.guard import brier_scores
from state.effort import EffortStore
from state.effort_records import GuardEvent, GuardState, RefitRecord
from state.settings import Settings

__all__ = ["UpkeepReport", "judge_guard", "refit_if_due", "upkeep"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpkeepReport:
    """What one upkeep did.

    Attributes:
        refit: The refit made (fitted or failed), if one was due.
        events: Guard trips and resumptions.
    """

    refit: RefitRecord | None = None
    events: list[GuardEvent] = field(default_factory=list)


def refit_if_due(store: EffortStore, project: int, checkpoint: str, settings: Settings) -> RefitRecord | None:
    """Refit the project's calibration for ``checkpoint`` when enough new annotations were counted.

    Returns:
        The stored refit (``failed`` with the reason when the fit raised), or None when none was due.
    """
    if settings.recalibration_every <= 0:
        return None
    last = store.last_refit(project, checkpoint)
    since = last.through_seq if last is not None else 0
    new, through = store.annotations(project, checkpoint=checkpoint, after_seq=since)
    if new < settings.recalibration_every:
        return None
    total, _ = store.annotations(project, checkpoint=checkpoint)
    try:
        tags, probabilities, answers = store.pairs(project, checkpoint, limit=settings.recalibration_max_pairs)
        config = RecalibrationConfig(prior_answers=settings.recalibration_prior_answers)
        recalibration = fit_recalibration(tags, probabilities, answers, config=config, model_version=checkpoint)
    except Exception as exc:  # a failed fit is stored and shown; serving keeps the last good one
        logger.error("project %s: the recalibration refit of %s failed: %s", project, checkpoint, exc)
        return store.save_refit(
            project,
            checkpoint,
            recalibration=None,
            annotations=total,
            through_seq=through,
            error=f"{type(exc).__name__}: {exc}",
        )
    record = store.save_refit(project, checkpoint, recalibration=recalibration, annotations=total, through_seq=through)
    logger.info(
        "project %s: refit %s of %s on %d answers (%d annotations): pooled slope %.2f, intercept %.2f, %d own maps",
        project,
        record.id,
        checkpoint,
        recalibration.answers,
        total,
        recalibration.pooled.slope,
        recalibration.pooled.intercept,
        len(recalibration.tags),
    )
    return record


def judge_guard(
    store: EffortStore,
    project: int,
    checkpoint: str,
    costs: EditCosts,
    config: GuardConfig,
    refit: RefitRecord | None = None,
    tag_costs: Mapping[str, EditCosts] | None = None,
) -> list[GuardEvent]:
    """Trip or resume tags for the serving ``checkpoint`` (module docstring).

    Args:
        store: The effort store.
        project: The project.
        checkpoint: The checkpoint serving it now.
        costs: The project's edit costs (the break-even point a shown tag must reach).
        config: Minimum showings and the interval's confidence.
        refit: A refit just made: tripped tags it predicts better resume.
        tag_costs: Tag key → the costs of its control where the labeling config sets its own
            (``model_cost_*``); other tags are judged under ``costs``.

    Returns:
        The events written, oldest first.
    """
    states = store.guard(project)
    totals = store.tag_totals(project, checkpoint=checkpoint)
    before = store.last_guard_event(project)
    for tag in sorted(set(states) | set(totals)):
        state = states.get(tag)
        counts = totals.get(tag)
        kept = counts.effort.kept if counts is not None else 0
        removed = counts.effort.removed if counts is not None else 0
        if state is None or state.checkpoint != checkpoint:
            state = _new_checkpoint(store, project, tag, checkpoint, state, kept, removed)
        kept_now, removed_now = kept - state.kept_base, removed - state.removed_base
        if state.state == "tripped":
            if refit is not None and refit.recalibration is not None:
                _resume_if_refit_better(store, project, state, refit, kept, removed, kept_now, removed_now)
            continue
        verdict = judge_tag(kept_now, removed_now, (tag_costs or {}).get(tag, costs), config)
        if verdict.tripped:
            tripped = replace(
                state,
                state="tripped",
                reason=f"tripped: {verdict.reason}",
                recalibration=None if refit is None else refit.id,
            )
            store.set_guard(project, tripped, "tripped", kept_now, removed_now)
            logger.warning("project %s: the guard stops showing %r: %s", project, tag, verdict.reason)
    return store.guard_events(project, after=before)


def _new_checkpoint(
    store: EffortStore, project: int, tag: str, checkpoint: str, state: GuardState | None, kept: int, removed: int
) -> GuardState:
    """Start a tag's judgement under ``checkpoint`` (its counts there start from zero)."""
    fresh = GuardState(tag, "active", checkpoint, 0, 0, 0, None, "judged under the model in service")
    if state is not None and state.state == "tripped":
        reason = (
            f"resumed: model version {checkpoint} now serves the project (the tag tripped under {state.checkpoint}); "
            "its showings are counted again from zero"
        )
        fresh = replace(fresh, reason=reason)
        store.set_guard(project, fresh, "resumed", kept, removed)
        logger.info("project %s: the guard shows %r again: %s", project, tag, reason)
    elif state is not None:
        store.set_guard(project, fresh, None, kept, removed)
    return fresh


def _resume_if_refit_better(
    store: EffortStore,
    project: int,
    state: GuardState,
    refit: RefitRecord,
    kept: int,
    removed: int,
    kept_now: int,
    removed_now: int,
) -> None:
    assert refit.recalibration is not None  # internal invariant: checked by the caller
    served, model, answers, last_seq = store.tag_showings(
        project, state.checkpoint, state.tag, after_seq=state.since_seq
    )
    if not answers:
        return
    remapped = refit.recalibration.map_of(state.tag).apply(model)
    scores = brier_scores(served, remapped, answers)
    if scores is None or not scores[1] < scores[0]:
        return
    reason = (
        f"resumed: refit {refit.id} predicts its {len(answers)} showings better (Brier {scores[1]:.3f} against "
        f"{scores[0]:.3f} served); its showings are counted again from zero"
    )
    resumed = replace(
        state,
        state="active",
        kept_base=kept,
        removed_base=removed,
        since_seq=last_seq,
        recalibration=refit.id,
        reason=reason,
    )
    store.set_guard(project, resumed, "resumed", kept_now, removed_now)
    logger.info("project %s: the guard shows %r again: %s", project, state.tag, reason)


def upkeep(
    store: EffortStore,
    project: int,
    checkpoint: str,
    settings: Settings,
    tag_costs: Mapping[str, EditCosts] | None = None,
) -> UpkeepReport:
    """Refit when due, then judge the guard (module docstring); ``tag_costs`` as :func:`judge_guard`'s."""
    refit = refit_if_due(store, project, checkpoint, settings)
    if not settings.guard_enabled:
        return UpkeepReport(refit, [])
    config = GuardConfig(min_shown=settings.guard_min_shown, confidence=settings.guard_confidence)
    events = judge_guard(store, project, checkpoint, settings.edit_costs(project), config, refit, tag_costs)
    return UpkeepReport(refit, events)
