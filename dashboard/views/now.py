"""The **Now** page: the model in service, workers and queues, the agent, the round lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from state.decision_log import DecisionRow

__all__ = ["AgentCard", "LockCard", "ModelCard", "NowView", "now_view"]

_METRICS_SHOWN: Final = ("mAP", "mAP_seen", "mAP_novel", "F1@3")


@dataclass(frozen=True)
class ModelCard:
    """The model in service: version, parent, held-out metrics, when it was promoted."""

    version: str
    parent: str | None
    is_base: bool
    round_id: str | None
    metrics: dict[str, float]
    promoted_at: str | None


@dataclass(frozen=True)
class LockCard:
    """A Redis lock: who holds it and for how much longer (``holder`` None: free)."""

    holder: str | None
    ttl_s: float | None

    @property
    def text(self) -> str:
        """For people."""
        if self.holder is None:
            return "free"
        left = "" if self.ttl_s is None else f", expires in {self.ttl_s:.0f} s unless renewed"
        return f"held by {self.holder}{left}"


@dataclass(frozen=True)
class AgentCard:
    """The agent: running (its lock is held), its last look, what it waits for."""

    running: bool
    holder: str | None
    last_look: str | None
    waiting_for: str


@dataclass(frozen=True)
class NowView:
    """The **Now** page."""

    project: int
    model: ModelCard
    workers: dict[str, list[str]] | None  # queue → worker names; None: could not ask
    workers_note: str
    queues: dict[str, int] | None  # queue → waiting messages; None: Redis unreachable
    unacked: int | None
    agent: AgentCard
    round_lock: LockCard


def now_view(
    project: int,
    *,
    current: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    workers: Mapping[str, Sequence[str]] | None,
    workers_note: str = "",
    queues: Mapping[str, int] | None,
    unacked: int | None,
    agent_holder: str | None,
    last_decision: DecisionRow | None,
    unfinished: Sequence[DecisionRow],
    round_lock: LockCard,
    alive_at: str | None = None,
) -> NowView:
    """Build the Now page.

    Args:
        project: The project.
        current: The registry's record of the version in service (``VersionRecord`` as JSON).
        history: The project's promotions and rollbacks (``PromotionEvent`` as JSON), oldest first.
        workers: Worker node names per queue they consume (None when the broker could not be asked).
        workers_note: When the worker list was read, or why it could not be.
        queues: Waiting messages per queue (None when Redis is unreachable).
        unacked: Messages delivered to workers and not acknowledged yet.
        agent_holder: Who holds the project's agent lock (None: no agent runs it).
        last_decision: The agent's newest decision row (its last look that decided something).
        unfinished: Decisions pending or running.
        round_lock: The project's round lock.
        alive_at: When a local agent last looked (its alive file); else its newest decision says.
    """
    version = str(current.get("version", "?"))
    promoted_at = next((str(e.get("at")) for e in reversed(history) if e.get("version") == version), None)
    metrics = {k: float(v) for k, v in dict(current.get("metrics") or {}).items() if k in _METRICS_SHOWN}
    model = ModelCard(
        version=version,
        parent=current.get("parent"),
        is_base=bool(current.get("is_base")),
        round_id=current.get("round_id"),
        metrics=metrics,
        promoted_at=promoted_at,
    )
    if unfinished:
        first = unfinished[0]
        waiting = f"{first.action} ({first.status} since {first.at[:19]}): {first.reason}"
    elif round_lock.holder is not None:
        waiting = f"the round in progress ({round_lock.holder})"
    elif agent_holder is not None:
        waiting = "the next Label Studio event or its next look"
    else:
        waiting = "nothing: no agent runs this project (start it with `assistant agent run`)"
    agent = AgentCard(
        running=agent_holder is not None,
        holder=agent_holder,
        last_look=alive_at or (None if last_decision is None else last_decision.at),
        waiting_for=waiting,
    )
    by_queue = None if workers is None else {q: sorted(names) for q, names in sorted(workers.items())}
    return NowView(
        project=project,
        model=model,
        workers=by_queue,
        workers_note=workers_note,
        queues=None if queues is None else dict(sorted(queues.items())),
        unacked=unacked,
        agent=agent,
        round_lock=round_lock,
    )
