"""Carrying out the agent's decisions through the existing components.

=============================  ===========================================================================
``preannotate``, ``rescore``,  ``backends.bulk``: plan the unlabeled tasks lacking a prediction for the
``repredict``                  decision's checkpoint and the current config, or whose prediction an older
                               project calibration chose (replaced in place), queue chunked chains
                               ``assistant.predict -> backends.publish_predictions``, follow them; then
                               wait for tasks another job had in flight. The workers serve image
                               features from their cache, so a re-score encodes only the label texts.
``train``                      ``workers.beat.queue_round`` (trigger ``agent``) under the round lock;
                               the decision stays ``running`` with the round's Celery id and each later
                               step polls it: the agent never waits hours in one call.
``select``                     ``assistant.score_pool`` on the predict queue over the unlabeled tasks
                               (the labeled ones for diversity), then ``backends.ordering.push_order``:
                               ranks in ``data.assistant_rank`` and the "Assistant: label next" tab.
``review``                     ``backends.ordering.push_order`` into ``data.assistant_review`` and the
                               "Assistant: review" tab: earlier flags not yet reviewed first, then the new
                               ones, worst first. No model runs (the flags come from the observation).
``guard``                      nothing: the guard acted when the annotations were counted
                               (``state.effort_upkeep``); the decision records why in the log.
=============================  ===========================================================================

Every action is idempotent, so a decision resumed after a crash runs again safely: a bulk plan skips
tasks already predicted or in flight, ``queue_round`` finds the round it queued (the lock holder), a
push writes only ranks that differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from celery.result import AsyncResult
from celery.states import READY_STATES, SUCCESS

from agent.observe import parse_time
from agent.services import AgentServices
from agent.studio import TaskRow
from assistant.agent_policy import PREDICTION_ACTIONS, Decision
from backends.bulk import BulkRun, plan_preannotation
from backends.convert import task_image_refs
from backends.errors import TaskDataError
from backends.ordering import REVIEW_FIELD, REVIEW_VIEW, RankedTask, push_order
from state.contracts import SCORE_POOL, ImageRef, RoundResult, ScorePoolRequest, ScorePoolResult
from state.round_log import read_round_log
from studio.config import parse_label_config
from studio.protocol import Task
from workers.beat import queue_round

__all__ = ["Executor", "Interrupted", "LabelStudioExecutor", "Outcome"]

logger = logging.getLogger(__name__)

# Seconds between polls of Label Studio while waiting for predictions another job has in flight.
_POLL_S = 2.0


class Interrupted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The agent was asked to stop in the middle of an action (the decision stays unfinished)."""


@dataclass(frozen=True)
class Outcome:
    """How an execution ended.

    Attributes:
        status: ``done``, ``failed``, or ``running`` (a round on a train worker).
        detail: What happened (JSON-ready); for ``running``, what the next poll needs.
    """

    status: Literal["running", "done", "failed"]
    detail: dict[str, Any] = field(default_factory=dict)


StopCheck = Callable[[], bool]


class Executor(Protocol):
    """Carries out decisions (the loop's only way to change anything)."""

    def run(self, decision: Decision, previous: Mapping[str, Any] | None, should_stop: StopCheck) -> Outcome:
        """Execute (or, with ``previous`` from a ``running`` row, follow up) one decision.

        Raises:
            Interrupted: ``should_stop()`` turned true during a wait.
        """
        ...


def _seed(key: str) -> int:
    # A selection resumed after a crash makes the same choice.
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def _as_task(row: TaskRow, project: int) -> Task:
    return Task(id=row.id, data=row.data, project=project)


class LabelStudioExecutor:
    """The production executor (module docstring).

    Args:
        services: Label Studio, the queue, the registry, the locks.
        clock: Now, in UTC (tests pass a fake one).
    """

    def __init__(self, services: AgentServices, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.svc = services
        self.settings = services.settings
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def run(self, decision: Decision, previous: Mapping[str, Any] | None, should_stop: StopCheck) -> Outcome:
        """See :meth:`Executor.run`."""
        if decision.action in PREDICTION_ACTIONS:
            return self._predict(decision, should_stop)
        if decision.action == "train":
            return self._train(decision, previous)
        if decision.action == "select":
            return self._select(decision, should_stop)
        if decision.action == "review":
            return self._review(decision)
        if decision.action == "guard":
            return Outcome("done", {"tag": decision.params.get("tag"), "event": decision.params.get("event")})
        raise ValueError(f"no executor for action {decision.action!r}")

    # --- predictions -------------------------------------------------------------------------
    def _predict(self, decision: Decision, should_stop: StopCheck) -> Outcome:
        started = time.monotonic()
        project, params = decision.project, decision.params
        svc = self.svc
        plan = plan_preannotation(
            svc.client,
            svc.registry,
            svc.state,
            project=project,
            unlabeled_only=True,
            model_version=str(params["checkpoint"]),
            chunk_size=self.settings.predict_chunk_size,
            store=svc.ledger.effort,
        )
        detail: dict[str, Any] = {
            "model_version": plan.model_version,
            "considered": plan.total,
            "already_predicted": len(plan.already_predicted),
            "stale": len(plan.stale),
            "calibration": plan.calibration,
            "in_flight": len(plan.in_flight),
            "queued": plan.queued,
            "posted": 0,
            "failed": {},
        }
        if plan.model_version != params.get("model_version"):
            detail["note"] = f"the labeling config changed since the decision; predicted with {plan.model_version}"
        failed: dict[str, int] = {}
        for failure in plan.failures:
            failed[failure.reason] = failed.get(failure.reason, 0) + 1
        deadline = time.monotonic() + self.settings.agent_action_timeout_s
        if plan.job is not None:
            run = BulkRun(svc.dispatcher, plan)
            run.start()

            def check(_: Any) -> None:
                if should_stop():
                    raise Interrupted

            progress = run.wait(timeout_s=self.settings.agent_action_timeout_s, on_progress=check)
            detail["posted"] = progress.posted
            detail["replaced"] = progress.replaced
            detail["skipped"] = progress.skipped
            for reason, count in progress.failed.items():
                failed[reason] = failed.get(reason, 0) + count
            if not progress.finished:
                detail.update(failed=failed, seconds=round(time.monotonic() - started, 1))
                return Outcome("failed", {**detail, "error": "timed out following the prediction jobs"})
        missing = self._wait_for_predictions(project, plan.model_version, plan.in_flight, deadline, should_stop)
        detail.update(failed=failed, seconds=round(time.monotonic() - started, 1))
        if missing:
            return Outcome(
                "failed", {**detail, "error": f"{len(missing)} tasks in flight elsewhere never got a prediction"}
            )
        return Outcome("done", detail)

    def _wait_for_predictions(
        self, project: int, version: str, tasks: Sequence[int], deadline: float, should_stop: StopCheck
    ) -> list[int]:
        """Wait until ``tasks`` (queued by another job, e.g. a killed agent's) have a prediction for ``version``."""
        waiting = list(tasks)
        while waiting:
            have = self.svc.client.prediction_versions(project)
            waiting = [t for t in waiting if version not in have.get(t, set())]
            if not waiting or time.monotonic() > deadline:
                break
            if should_stop():
                raise Interrupted
            time.sleep(_POLL_S)
        return waiting

    # --- rounds ------------------------------------------------------------------------------
    def _train(self, decision: Decision, previous: Mapping[str, Any] | None) -> Outcome:
        svc, project = self.svc, decision.project
        if not previous or not previous.get("task_id"):
            ticket = queue_round(
                svc.app,
                svc.locks,
                project,
                trigger="agent",
                queue_ttl_s=self.settings.round_queue_ttl_s,
                queue=self.settings.train_queue,
            )
            detail = {"task_id": ticket.task_id, "queued": ticket.status, "queued_at": self.clock().isoformat()}
            if ticket.status != "queued":
                detail["note"] = "a round was already queued or running for the project: following it"
            return Outcome("running", detail)
        task_id = str(previous["task_id"])
        queued_at = parse_time(previous.get("queued_at")) or self.clock()
        result = AsyncResult(task_id, app=svc.app)
        state = result.state
        base = {"task_id": task_id, "queued_at": queued_at.isoformat()}
        if state == SUCCESS:
            round_result = RoundResult.model_validate(result.result)
            return Outcome("done", {**base, **_round_detail(round_result, queued_at, self.clock())})
        if state in READY_STATES:
            return Outcome("failed", {**base, "error": f"the round task ended {state}: {str(result.result)[:300]}"})
        # A holder that is no Celery task (`assistant round run` in a shell) has no result: its line
        # in the round log, once the lock is free, says how it ended.
        if svc.locks.holder(project) != task_id:
            for entry in reversed(read_round_log(self.settings.models_dir, project)):
                finished = parse_time(entry.get("finished_at"))
                # The log's times have whole seconds.
                if finished is not None and finished >= queued_at.replace(microsecond=0):
                    detail = {**base, **_round_log_detail(entry)}
                    return Outcome("failed" if entry.get("status") == "failed" else "done", detail)
        limit = self.settings.train_time_limit_s + self.settings.round_queue_ttl_s
        if (self.clock() - queued_at).total_seconds() > limit:
            return Outcome("failed", {**base, "error": f"no result after {limit / 3600:.1f} h"})
        return Outcome("running", {**dict(previous), "state": state})

    # --- selection ---------------------------------------------------------------------------
    def _select(self, decision: Decision, should_stop: StopCheck) -> Outcome:
        started = time.monotonic()
        svc, project, params = self.svc, decision.project, decision.params
        vocab = parse_label_config(svc.client.label_config(project))
        rows = svc.reader.tasks(project)
        pool, unusable = _refs(vocab, [r for r in rows if not r.labeled], project)
        labeled, _ = _refs(vocab, [r for r in rows if r.labeled], project)
        if not pool:
            return Outcome("done", {"chosen": 0, "note": "no unlabeled task with an image", "unusable": unusable})
        request = ScorePoolRequest(
            project=project,
            model_version=str(params["model_version"]).partition("+")[0],
            labels=list(vocab.labels),
            images=pool,
            labeled=labeled,
            strategy=str(params.get("strategy", "saving")),
            k=int(params.get("k", 100)),
            break_even=self.settings.edit_costs(project).break_even,
            seed=_seed(decision.key),
            request_id=f"agent-{uuid.uuid4().hex[:12]}",
        )
        handle = svc.app.send_task(
            SCORE_POOL, kwargs=request.model_dump(mode="json"), queue=self.settings.predict_queue
        )
        deadline = time.monotonic() + self.settings.agent_action_timeout_s
        while not handle.ready():
            if should_stop():
                raise Interrupted
            if time.monotonic() > deadline:
                handle.revoke()
                return Outcome("failed", {"error": "no answer from the workers to assistant.score_pool in time"})
            time.sleep(0.5)
        result = ScorePoolResult.model_validate(handle.get(propagate=True))
        ranked = _ranked(result)
        report = push_order(svc.client, project, ranked, [_as_task(r, project) for r in rows])
        return Outcome(
            "done",
            {
                "chosen": len(ranked),
                "pool": result.pool_size,
                "cached": result.cached,
                "failed": len(result.failed),
                "unusable": unusable,
                "strategy": result.strategy,
                "model_version": result.model_version,
                "view_id": report.view_id,
                "cleared": report.cleared,
                "first": [{"task": r.task_id, "why": r.reason} for r in ranked[:5]],
                "seconds": round(time.monotonic() - started, 1),
            },
        )

    # --- review ------------------------------------------------------------------------------
    def _review(self, decision: Decision) -> Outcome:
        svc, project = self.svc, decision.project
        rows = svc.reader.tasks(project)
        flags = [int(f["task"]) for f in decision.params.get("flags", [])]
        earlier = sorted((r for r in rows if r.review_rank is not None), key=lambda r: (r.review_rank or 0, r.id))
        reviewed = self._reviewed(project, [r.id for r in earlier])
        known = {r.id for r in rows}
        order = [r.id for r in earlier if r.id not in reviewed and r.id not in flags] + [t for t in flags if t in known]
        ranked = [RankedTask(task, rank) for rank, task in enumerate(order, start=1)]
        report = push_order(
            svc.client, project, ranked, [_as_task(r, project) for r in rows], field=REVIEW_FIELD, title=REVIEW_VIEW
        )
        return Outcome(
            "done",
            {
                "flagged": len([t for t in flags if t in known]),
                "queue": len(ranked),
                "reviewed_since": len(reviewed),
                "view_id": report.view_id,
            },
        )

    def _reviewed(self, project: int, tasks: Sequence[int]) -> set[int]:
        """Tasks of the review queue whose annotation changed after the agent flagged them."""
        if not tasks:
            return set()
        flagged_at: dict[int, dt.datetime] = {}
        for record in self.svc.log.states(project):
            if record.decision.action == "review" and record.status == "done":
                for flag in record.decision.params.get("flags", []):
                    flagged_at.setdefault(int(flag["task"]), record.at)
        wanted = set(tasks)
        out = set()
        for entry in self.svc.ledger.entries(project):
            task = entry.event.task
            if task in wanted and task in flagged_at:
                received = dt.datetime.fromisoformat(entry.received_at)
                if received > flagged_at[task]:
                    out.add(task)
        return out


def _refs(vocab: Any, rows: Sequence[TaskRow], project: int) -> tuple[list[ImageRef], int]:
    refs: list[ImageRef] = []
    unusable = 0
    for row in rows:
        try:
            refs.extend(task_image_refs(vocab, _as_task(row, project)))
        except TaskDataError:
            unusable += 1
    return refs, unusable


def _ranked(result: ScorePoolResult) -> list[RankedTask]:
    """One rank per task (a task with several images ranks by its best one), as ``assistant select``."""
    out: list[RankedTask] = []
    seen: set[int] = set()
    for chosen in result.chosen:
        task_id = chosen.task_id if chosen.task_id is not None else int(chosen.key.split(":")[0])
        if task_id in seen:
            continue
        seen.add(task_id)
        out.append(RankedTask(task_id, len(out) + 1, chosen.reason))
    return out


def _round_detail(result: RoundResult, queued_at: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    return {
        "round_id": result.round_id,
        "status": result.status,
        "promoted": result.promoted,
        "candidate_version": result.candidate_version,
        "current_version": result.current_version,
        "reason": result.reason,
        "metrics": {k: round(v, 2) for k, v in result.metrics.items()},
        "report_path": result.report_path,
        "counts": dict(result.counts),
        "seconds": round((now - queued_at).total_seconds(), 1),
    }


def _round_log_detail(entry: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("round_id", "status", "promoted", "candidate_version", "current_version", "reason", "report_path")
    return {**{k: entry.get(k) for k in keys}, "metrics": entry.get("metrics") or {}, "from": "round log"}
