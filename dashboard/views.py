"""What each dashboard page shows: typed view models built by pure functions from plain inputs.

No I/O here: ``dashboard/data.py`` reads the registry, the round log, the effort ledger, the
decision log and Redis; these functions turn what it read into what the templates print, so
every page's content is tested without services (``tests/dashboard/test_views.py``).

Pages (``docs/dashboard.md``): **Now** (:func:`now_view`), **Value** (:func:`value_view`),
**Rounds** (:func:`rounds_view`, :func:`round_detail`), **Agent** (:func:`agent_view`), **Queue
and review** (:func:`queue_view`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dashboard.decisions import DecisionRow

__all__ = [
    "AgentCard",
    "AgentView",
    "LockCard",
    "ModelCard",
    "NowView",
    "Page",
    "QueueItem",
    "QueueView",
    "RoundDetail",
    "RoundRow",
    "RoundsView",
    "StoryRow",
    "TagRow",
    "ValueView",
    "VersionEffortRow",
    "VersionRow",
    "agent_view",
    "now_view",
    "queue_view",
    "round_detail",
    "rounds_view",
    "value_view",
]

#: Rows per page on the paged tables.
PAGE_SIZE: Final = 50
#: Registered versions listed on the Rounds page (newest first; the one in service always).
VERSIONS_SHOWN: Final = 20
_METRICS_SHOWN: Final = ("mAP", "mAP_seen", "mAP_novel", "F1@3")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# --- Now -----------------------------------------------------------------------------------------------
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


# --- Value ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionEffortRow:
    """Edits per task against from scratch with one model version."""

    model_version: str
    first_at: str
    last_at: str
    tasks: int
    edits_per_task: str
    scratch_per_task: str
    saved: float | None  # share of labeling work saved; negative: pre-annotation cost more
    verdict: str


@dataclass(frozen=True)
class TagRow:
    """One tag: what it saved (negative: cost), the shown tags' precision and recall, the guard."""

    tag: str
    kept: int
    removed: int
    added: int
    saved: float
    precision: str
    recall: str
    novel: bool
    guard: str


@dataclass(frozen=True)
class Bar:
    """One model version in the bar chart: edits per task and from scratch per task, as chart heights (0-1)."""

    label: str
    edits: float
    scratch: float
    edits_h: float
    scratch_h: float


def bars(versions: Sequence[Mapping[str, Any]]) -> list[Bar]:
    """The Value page's chart: per model version in time order, both heights scaled to the tallest bar."""
    pairs = [
        (
            str(v.get("model_version", "?")),
            float(v.get("edits_per_task") or 0.0),
            float(v.get("scratch_per_task") or 0.0),
        )
        for v in sorted(versions, key=lambda v: str(v.get("first_at") or ""))
        if int(v.get("tasks") or 0) > 0
    ]
    top = max((max(e, s) for _, e, s in pairs), default=0.0) or 1.0
    return [Bar(label, e, s, e / top, s / top) for label, e, s in pairs]


@dataclass(frozen=True)
class ValueView:
    """The **Value** page."""

    project: int
    headline: str
    negative: bool  # the saving is below zero: the page says it in red, first
    counted: int
    pending: int
    versions: list[VersionEffortRow]
    tags: list[TagRow]
    tripped: list[str]
    chart: list[Bar]
    plot: str | None  # the latest round report's edits-over-time plot (a file name under that round)
    plot_round: str | None
    error: str | None


def _verdict(saved: float | None, tasks: int) -> str:
    if saved is None or tasks == 0:
        return "not measured yet"
    if saved < 0:
        return f"costs {_pct(-saved)} more edits than labeling from scratch"
    if saved == 0:
        return "saves nothing"
    return f"saves {_pct(saved)} of the edits"


def value_view(
    project: int,
    effort: Mapping[str, Any] | None,
    *,
    plot: str | None = None,
    plot_round: str | None = None,
    error: str | None = None,
) -> ValueView:
    """Build the Value page from ``state.effort_summary.project_effort``'s figures (None: no ledger).

    Tags are sorted by what they save, the costliest first: the top of the table is where the
    annotators lose time.
    """
    effort = effort or {}
    totals = dict(effort.get("totals") or {})
    tasks = int(totals.get("tasks") or 0)
    saved = totals.get("saved_share")
    saved_f = None if saved is None else float(saved)
    in_service = effort.get("in_service")
    if tasks == 0:
        headline = "No annotation counted yet: nothing to compare with labeling from scratch."
    else:
        headline = f"Over {tasks} annotated tasks, pre-annotation {_verdict(saved_f, tasks)}"
        if in_service:
            s = in_service.get("saved_share")
            served = _verdict(None if s is None else float(s), int(in_service.get("tasks") or 0))
            headline += f"; with the model in service it {served}"
        headline += "."
    versions = [
        VersionEffortRow(
            model_version=str(v.get("model_version", "?")),
            first_at=str(v.get("first_at") or "")[:19].replace("T", " "),
            last_at=str(v.get("last_at") or "")[:19].replace("T", " "),
            tasks=int(v.get("tasks") or 0),
            edits_per_task=_num(v.get("edits_per_task")),
            scratch_per_task=_num(v.get("scratch_per_task")),
            saved=None if v.get("saved_share") is None else float(v["saved_share"]),
            verdict=_verdict(
                None if v.get("saved_share") is None else float(v["saved_share"]), int(v.get("tasks") or 0)
            ),
        )
        for v in effort.get("versions") or []
    ]
    versions.sort(key=lambda r: r.first_at)
    tags = [
        TagRow(
            tag=str(name),
            kept=int(t.get("kept") or 0),
            removed=int(t.get("removed") or 0),
            added=int(t.get("added") or 0),
            saved=float(t.get("saved") or 0.0),
            precision=_pct(t.get("precision")),
            recall=_pct(t.get("recall")),
            novel=bool(t.get("novel")),
            guard=str(t.get("guard") or "shown"),
        )
        for name, t in dict(effort.get("tags") or {}).items()
    ]
    tags.sort(key=lambda r: (r.saved, r.tag))
    guard = dict(effort.get("guard") or {})
    counting = dict(effort.get("counting") or {})
    return ValueView(
        project=project,
        headline=headline,
        negative=saved_f is not None and tasks > 0 and saved_f < 0,
        counted=int(counting.get("counted") or 0),
        pending=int(counting.get("pending") or 0),
        versions=versions,
        tags=tags,
        tripped=[str(g.get("tag")) for g in guard.get("tripped") or []],
        chart=bars(effort.get("versions") or []),
        plot=plot,
        plot_round=plot_round,
        error=error or (str(counting["error"]) if counting.get("error") else None),
    )


# --- Rounds --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundRow:
    """One round of the round log."""

    round_id: str
    status: str  # promoted, kept (refused), skipped, busy, failed
    finished_at: str
    trigger: str
    candidate: str | None
    metric: str
    change: str
    reason: str
    has_report: bool


@dataclass(frozen=True)
class VersionRow:
    """One registered version, with what the buttons may do to it."""

    version: str
    parent: str | None
    round_id: str | None
    created_at: str
    map: str
    current: bool


@dataclass(frozen=True)
class Page:
    """Where a paged table is: 1-based page number, and whether there are others."""

    number: int
    has_previous: bool
    has_next: bool


@dataclass(frozen=True)
class RoundsView:
    """The **Rounds** page."""

    project: int
    rounds: list[RoundRow]
    page: Page
    total: int
    failed: int
    versions: list[VersionRow]
    versions_total: int
    current: str
    can_roll_back: bool


def _round_status(entry: Mapping[str, Any]) -> str:
    status = str(entry.get("status") or "")
    if status:
        return status
    if entry.get("error"):
        return "failed"
    return "promoted" if entry.get("promoted") else "kept"


def _round_row(entry: Mapping[str, Any], reports: set[str]) -> RoundRow:
    metrics = dict(entry.get("metrics") or {})
    status = _round_status(entry)
    # A failed round (workers/rounds.py) logs its message as ``reason`` and the exception's class as ``error``.
    reason, error = str(entry.get("reason") or ""), str(entry.get("error") or "")
    if error and not reason.startswith(error):
        reason = f"{error}: {reason}" if reason else error
    delta = metrics.get("delta_mAP")
    round_id = str(entry.get("round_id") or "")
    return RoundRow(
        round_id=round_id,
        status=status,
        finished_at=str(entry.get("finished_at") or "")[:19].replace("T", " "),
        trigger=str(entry.get("trigger") or ""),
        candidate=entry.get("candidate_version") or entry.get("attempted_version"),
        metric=_num(None if metrics.get("mAP") is None else float(metrics["mAP"]), 1),
        change="–" if delta is None else f"{float(delta):+.1f}",
        reason=reason,
        has_report=round_id in reports,
    )


def rounds_view(
    project: int,
    rounds: Sequence[Mapping[str, Any]],
    *,
    reports: set[str],
    versions: Sequence[Mapping[str, Any]],
    current: str,
    rollback_possible: bool,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> RoundsView:
    """Build the Rounds page: the round log newest first, one page, and the registry's versions.

    Args:
        project: The project.
        rounds: The round log, oldest first (one JSON object per finished round).
        reports: Round ids that have a report directory.
        versions: The project's registered versions (``VersionRecord`` as JSON), oldest first.
        current: The version in service.
        rollback_possible: The project has a promotion to undo.
        page: 1-based page of rounds.
        page_size: Rounds per page.
    """
    total = len(rounds)
    start = (page - 1) * page_size
    newest_first = rounds[::-1][start : start + page_size]
    rows = [_round_row(e, reports) for e in newest_first]
    failed = sum(1 for e in rounds if _round_status(e) == "failed")
    version_rows = [
        VersionRow(
            version=str(v.get("version")),
            parent=v.get("parent"),
            round_id=v.get("round_id"),
            created_at=str(v.get("created_at") or "")[:19].replace("T", " "),
            map=_num(dict(v.get("metrics") or {}).get("mAP"), 1),
            current=v.get("version") == current,
        )
        for v in reversed(versions)
    ]
    # The newest versions (and the one in service, wherever it is): a registry of 1,000 rounds is not one table.
    shown = version_rows[:VERSIONS_SHOWN] + [v for v in version_rows[VERSIONS_SHOWN:] if v.current]
    return RoundsView(
        project=project,
        rounds=rows,
        page=Page(page, page > 1, start + page_size < total),
        total=total,
        failed=failed,
        versions=shown,
        versions_total=len(version_rows),
        current=current,
        can_roll_back=rollback_possible,
    )


@dataclass(frozen=True)
class RoundDetail:
    """One round's report: the Markdown (rendered by the web layer) and its plots."""

    project: int
    round: RoundRow | None
    markdown: str | None
    plots: list[str]


def round_detail(
    project: int, round_id: str, entry: Mapping[str, Any] | None, markdown: str | None, files: Sequence[str]
) -> RoundDetail:
    """Build one round's page (``entry``: its round-log line; ``files``: its report folder's files)."""
    row = None if entry is None else _round_row(entry, {round_id} if markdown is not None else set())
    plots = sorted(f for f in files if f.lower().endswith((".png", ".svg")))
    return RoundDetail(project=project, round=row, markdown=markdown, plots=plots)


# --- Agent ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoryRow:
    """One decision, as a line of ``assistant agent log``, with what the policy saw to expand."""

    seq: int
    at: str
    action: str
    status: str
    attempt: int
    line: str
    params: dict[str, Any]
    saw: dict[str, Any]
    outcome: dict[str, Any]


@dataclass(frozen=True)
class AgentView:
    """The **Agent** page."""

    project: int
    action: str | None
    actions: list[str]
    rows: list[StoryRow]
    next_before: int | None
    before: int | None


#: The filter's choices: the policy's actions, then what people do from the dashboard.
AGENT_ACTIONS: Final = (
    "guard",
    "preannotate",
    "rescore",
    "repredict",
    "review",
    "train",
    "select",
    "promote",
    "rollback",
)


def _outcome_text(row: DecisionRow) -> str:
    out = row.outcome
    if row.status == "failed" and out.get("error"):
        return f" → failed: {out['error']}"
    if row.status in {"pending", "running"}:
        return f" ({row.status})"
    shown = {k: v for k, v in out.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}
    if not shown:
        return ""
    parts = [f"{k}={v}" for k, v in list(shown.items())[:4]]
    return " → " + ", ".join(parts)


def agent_view(
    project: int, rows: Sequence[DecisionRow], *, action: str | None, next_before: int | None, before: int | None
) -> AgentView:
    """Build the Agent page: one line per decision (its latest state), newest first, one page."""
    story = [
        StoryRow(
            seq=r.seq,
            at=r.at[:19].replace("T", " "),
            action=r.action,
            status=r.status,
            attempt=r.attempt,
            line=r.reason + _outcome_text(r),
            params=dict(r.params),
            saw=dict(r.saw),
            outcome=dict(r.outcome),
        )
        for r in rows
    ]
    return AgentView(
        project=project,
        action=action,
        actions=list(AGENT_ACTIONS),
        rows=story,
        next_before=next_before,
        before=before,
    )


# --- Queue and review ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueItem:
    """A task to label next, or a review flag: its reason and a link that opens it in Label Studio."""

    task: int
    reason: str
    link: str


@dataclass(frozen=True)
class QueueView:
    """The **Queue and review** page."""

    project: int
    selected_at: str | None
    selected_total: int
    selected: list[QueueItem]
    selection_note: str
    reviewed_at: str | None
    flags: list[QueueItem]
    label_next_link: str
    review_link: str
    notes: list[str] = field(default_factory=list)


def task_link(label_studio_url: str, project: int, task: int) -> str:
    """The Label Studio URL that opens ``task`` in its project's labeling view."""
    return f"{label_studio_url.rstrip('/')}/projects/{project}/data?task={task}"


def queue_view(
    project: int, select: DecisionRow | None, review: DecisionRow | None, *, label_studio_url: str
) -> QueueView:
    """Build the Queue and review page from the agent's latest done ``select`` and ``review`` decisions."""
    selected: list[QueueItem] = []
    total = 0
    note = "No selection yet: the agent selects when the queue runs low (or run `assistant select`)."
    if select is not None:
        total = int(select.outcome.get("chosen") or 0)
        for item in select.outcome.get("first") or []:
            with_task = dict(item)
            task = int(with_task.get("task", 0))
            selected.append(
                QueueItem(task, str(with_task.get("why") or ""), task_link(label_studio_url, project, task))
            )
        note = (
            f"The first {len(selected)} of {total} tasks chosen ({select.outcome.get('strategy', '?')} strategy); "
            "the whole queue is Label Studio's tab “Assistant: label next”."
        )
    flags: list[QueueItem] = []
    if review is not None:
        for flag in review.params.get("flags") or []:
            f = dict(flag)
            task = int(f.get("task", 0))
            quality = f.get("quality")
            why = str(f.get("why") or "")
            if quality is not None:
                why = f"{why} (label quality {float(quality):.2f})"
            flags.append(QueueItem(task, why, task_link(label_studio_url, project, task)))
    base = label_studio_url.rstrip("/")
    return QueueView(
        project=project,
        selected_at=None if select is None else select.at[:19],
        selected_total=total,
        selected=selected,
        selection_note=note,
        reviewed_at=None if review is None else review.at[:19],
        flags=flags,
        label_next_link=f"{base}/projects/{project}/data",
        review_link=f"{base}/projects/{project}/data",
    )


def age(at: str | None, now: dt.datetime | None = None) -> str:
    """How long ago an ISO time was, for people ("3 min ago"); empty when unknown."""
    if not at:
        return ""
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
