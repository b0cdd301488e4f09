"""The agent's loop: observe, decide, execute, record; and resume what a killed agent left.

One :meth:`Agent.step` for one project:

1. **resume**: every decision whose latest log row is ``pending`` or ``running`` (a killed agent's,
   or a round still on a train worker) is executed again, or followed up;
2. **look**: unless nothing changed since the last full look (:meth:`agent.observe.Observer.changed`),
   build the observation;
3. **decide**: :meth:`assistant.agent_policy.Policy.decide`;
4. **execute**, in order, each decision whose key is new (or failed, with tries left and after the
   retry delay): write ``pending``, execute, write the outcome (``done``, ``failed``, or ``running``
   for a queued round). A ``deferred`` decision is only written, once per key.

The order of the writes makes restarts safe: a decision is in the log before anything happens, so a
kill at any point leaves it ``pending`` or ``running`` and the next start resumes it (its actions are
idempotent, :mod:`agent.execute`); a ``done`` key is never run again because the same situation
gives the same key.

:func:`run_forever` drives the steps of several projects: it holds each project's agent lock
(:class:`state.locks.AgentLocks`, renewed by a heartbeat; a second agent on the same project
gives way), and sleeps between looks on the inbox of Label Studio events, which wakes it at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.decision_log import DecisionLog, Record
from agent.execute import Executor, Interrupted, Outcome
from agent.report import add_to_round_report
from assistant.agent_policy import Decision, Observation, Policy

__all__ = ["Agent", "Looker", "StepReport", "run_forever"]

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Looker(Protocol):
    """What the loop needs of an observer (:class:`agent.observe.Observer` in production)."""

    def changed(self, project: int, now: dt.datetime) -> bool:
        """Whether a full look is needed."""
        ...

    def observe(self, project: int, now: dt.datetime, events: Sequence[str] = ()) -> Observation:
        """The full look."""
        ...


@dataclass
class StepReport:
    """What one step did.

    Attributes:
        project: The project.
        looked: Whether it built an observation (False: nothing changed since the last look).
        observation: The observation, when it looked.
        decisions: What the policy decided (executed or not).
        records: The log rows written, in order.
        skipped: Keys decided again but not executed (done before, or waiting to retry).
    """

    project: int
    looked: bool = False
    observation: Observation | None = None
    decisions: list[Decision] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Agent:
    """Observe, decide, execute, record (module docstring).

    Args:
        policy: The policy.
        observer: Builds observations.
        executor: Carries out decisions.
        log: The decision log.
        clock: Now, in UTC.
        stop: Set to stop between (and inside the waits of) actions.
        heartbeat: Called at every step and while an action waits (a liveness mark, throttled by
            the caller), so that a long action still shows a live agent.
    """

    def __init__(
        self,
        policy: Policy,
        observer: Looker,
        executor: Executor,
        log: DecisionLog,
        *,
        clock: Clock = _utcnow,
        stop: threading.Event | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.policy, self.observer, self.executor, self.log = policy, observer, executor, log
        self.clock = clock
        self.stop = stop or threading.Event()
        self.heartbeat = heartbeat or (lambda: None)

    def _should_stop(self) -> bool:
        self.heartbeat()
        return self.stop.is_set()

    # --- one step ----------------------------------------------------------------------------
    def step(self, project: int, events: Sequence[str] = (), *, force: bool = False) -> StepReport:
        """Resume, look, decide and execute for one project.

        Args:
            project: The project.
            events: Label Studio events since the last step (recorded in what the policy saw).
            force: Look even if nothing seems to have changed.

        Raises:
            Interrupted: :attr:`stop` was set during an action (its decision stays unfinished).
        """
        report = StepReport(project)
        self.heartbeat()
        for record in self.log.unfinished(project):
            self._execute(record.decision, record, report)
            if self.stop.is_set():
                return report
        now = self.clock()
        if not (force or events or self.observer.changed(project, now)):
            return report
        obs = self.observer.observe(project, now, events)
        report.looked, report.observation = True, obs
        report.decisions = self.policy.decide(obs)
        for decision in report.decisions:
            if self.stop.is_set():
                break
            self._consider(decision, report)
        return report

    def decide(self, project: int, events: Sequence[str] = ()) -> tuple[Observation, list[Decision]]:
        """Look and decide without executing or writing anything (``--dry-run``)."""
        obs = self.observer.observe(project, self.clock(), events)
        return obs, self.policy.decide(obs)

    def _consider(self, decision: Decision, report: StepReport) -> None:
        latest = self.log.latest(decision.key)
        if decision.status == "deferred":
            if latest is None:
                report.records.append(self.log.append(decision, "deferred", at=self.clock()))
            else:
                report.skipped.append(decision.key)
            return
        attempt = 1
        if latest is not None:
            if latest.status != "failed" or not self._may_retry(latest):
                report.skipped.append(decision.key)
                return
            attempt = latest.attempt + 1
        pending = self.log.append(decision, "pending", attempt=attempt, at=self.clock())
        report.records.append(pending)
        self._execute(decision, pending, report)

    def _may_retry(self, failed: Record) -> bool:
        cfg = self.policy.config
        waited = (self.clock() - failed.at).total_seconds()
        return failed.attempt < cfg.max_attempts and waited >= cfg.retry_after_s

    def _execute(self, decision: Decision, current: Record, report: StepReport) -> None:
        previous: Mapping[str, Any] | None = current.outcome if current.status == "running" else None
        try:
            outcome = self.executor.run(decision, previous, self._should_stop)
        except Interrupted:
            logger.info("stopped during %s: it stays %s and resumes at the next start", decision.key, current.status)
            raise
        except Exception as exc:
            logger.error("decision %s failed: %s", decision.key, exc, exc_info=True)
            outcome = Outcome("failed", {"error": f"{type(exc).__name__}: {str(exc)[:500]}"})
        if outcome.status == "running" and current.status == "running" and outcome.detail == current.outcome:
            return  # a round still on its worker: nothing new to write
        record = self.log.append(decision, outcome.status, outcome.detail, attempt=current.attempt, at=self.clock())
        report.records.append(record)
        if record.status == "done" and decision.action == "train":
            try:
                add_to_round_report(self.log, record)
            except OSError as exc:
                logger.warning("could not add the decisions to the round report: %s", exc)


# --- many projects, forever ---------------------------------------------------------------------
def run_forever(
    agent: Agent,
    projects: Callable[[], Iterable[int]],
    *,
    wait: Callable[[float], list[tuple[str, int]]],
    interval_s: float,
    claim: Callable[[int, str], bool] | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> None:
    """Step every project until ``agent.stop`` is set.

    Args:
        agent: The agent.
        projects: The projects to run (called every round of steps, so new projects join).
        wait: ``wait(seconds)`` blocks until Label Studio events arrive or the time passes, and
            returns them as ``[(action, project)]`` (:meth:`agent.services.EventInbox.wait`).
        interval_s: Seconds between two rounds of steps without events.
        claim: ``claim(project, holder)`` takes the project's agent lock (True when held); None
            runs every project without a lock.
        on_step: Called with each step's report (the CLI prints it).
    """
    holder = f"agent:{uuid.uuid4().hex[:12]}"
    events: dict[int, list[str]] = defaultdict(list)
    while not agent.stop.is_set():
        agent.heartbeat()
        for project in list(projects()):
            if agent.stop.is_set():
                break
            if claim is not None and not claim(project, holder):
                continue
            try:
                report = agent.step(project, events.pop(project, []))
            except Interrupted:
                return
            except Exception as exc:  # Label Studio or Redis down: log, and look again later
                logger.error("project %s: the step failed: %s", project, exc, exc_info=True)
                continue
            if on_step is not None:
                on_step(report)
        if agent.stop.is_set():
            return
        for action, project in wait(interval_s):
            events[project].append(action)
