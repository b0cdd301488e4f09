"""The decision log told as a story: one line per decision, and a section in each round report.

:func:`story` turns log rows into lines people read (``assistant agent log``)::

    2026-03-02 10:15:04  p3  preannotate  done     24 unlabeled tasks have no prediction ... -> posted 24 (8.1 s)

:func:`add_to_round_report` writes the decisions that led to a round (everything the agent decided
for the project since its previous round, and the round decision itself) next to the round's report:
``agent-decisions.md`` and ``agent-decisions.json`` in the report folder, and an "Agent decisions"
section at the end of ``report.md`` (replaced, never duplicated, when written again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.decision_log import DecisionLog, Record

__all__ = ["add_to_round_report", "describe_outcome", "story"]

logger = logging.getLogger(__name__)

_SECTION = "## Agent decisions"


def describe_outcome(action: str, outcome: Mapping[str, Any]) -> str:
    """A short text of what an execution did."""
    if not outcome:
        return ""
    if "error" in outcome:
        return f"error: {outcome['error']}"
    seconds = f" ({outcome['seconds']:.0f} s)" if isinstance(outcome.get("seconds"), int | float) else ""
    if action in ("preannotate", "rescore", "repredict"):
        failed = sum(int(v) for v in (outcome.get("failed") or {}).values())
        parts = [f"posted {outcome.get('posted', 0)}"]
        if outcome.get("in_flight"):
            parts.append(f"{outcome['in_flight']} in flight elsewhere")
        if outcome.get("already_predicted"):
            parts.append(f"{outcome['already_predicted']} already predicted")
        if failed:
            parts.append(f"{failed} failed")
        return ", ".join(parts) + f" with {outcome.get('model_version', '?')}{seconds}"
    if action == "train":
        if outcome.get("round_id") is None and outcome.get("task_id"):
            return f"round {outcome['task_id'][:12]} {outcome.get('queued', 'queued')}"
        metrics = outcome.get("metrics") or {}
        score = ""
        if "mAP" in metrics:
            score = f", held-out mAP {metrics['mAP']:.1f}"
            if "delta_mAP" in metrics:
                score += f" ({metrics['delta_mAP']:+.1f})"
        return (
            f"round {outcome.get('round_id') or '-'} {outcome.get('status', '?')}: serving "
            f"{outcome.get('current_version', '?')}{score}"
        )
    if action == "select":
        return (
            f"queued {outcome.get('chosen', 0)} of {outcome.get('pool', 0)} unlabeled tasks "
            f"({outcome.get('cached', 0)} features cached) in view {outcome.get('view_id', '-')}{seconds}"
        )
    if action == "guard":
        return f"{outcome.get('tag')} {outcome.get('event')}: logged"
    if action == "review":
        return (
            f"flagged {outcome.get('flagged', 0)}; review queue {outcome.get('queue', 0)} "
            f"in view {outcome.get('view_id', '-')}"
        )
    return json.dumps(dict(outcome))[:120]


def story(records: Iterable[Record], *, every_row: bool = False) -> list[str]:
    """One line per decision (its latest row), or per row with ``every_row``, in log order."""
    rows = list(records)
    if not every_row:
        latest: dict[str, Record] = {}
        for record in rows:
            latest[record.key] = record
        rows = list(latest.values())
    lines = []
    for r in rows:
        d = r.decision
        text = f"{r.at:%Y-%m-%d %H:%M:%S}  p{d.project}  {d.action:<11} {r.status:<8} {d.reason}"
        outcome = describe_outcome(d.action, r.outcome)
        if outcome:
            text += f" -> {outcome}"
        if r.attempt > 1:
            text += f" [try {r.attempt}]"
        lines.append(text)
    return lines


def _since_previous_round(log: DecisionLog, record: Record) -> list[Record]:
    rows = log.records(record.decision.project)
    start = 0
    for i, r in enumerate(rows):
        if r.seq >= record.seq:
            break
        if r.decision.action == "train" and r.status == "done" and r.key != record.key:
            start = i + 1
    latest: dict[str, Record] = {}
    for r in rows[start:]:
        if r.seq <= record.seq:
            latest[r.key] = r
    return list(latest.values())


def _markdown(records: Sequence[Record]) -> str:
    lines = [
        _SECTION,
        "",
        "What the agent saw and chose for this project since its previous round (`assistant agent log`).",
        "",
        "| time (UTC) | action | status | why | outcome |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        why = r.decision.reason.replace("|", "\\|")
        outcome = describe_outcome(r.decision.action, r.outcome).replace("|", "\\|")
        lines.append(f"| {r.at:%Y-%m-%d %H:%M:%S} | {r.decision.action} | {r.status} | {why} | {outcome} |")
    return "\n".join(lines) + "\n"


def add_to_round_report(log: DecisionLog, record: Record) -> Path | None:
    """Write the decisions that led to a finished round next to its report (module docstring).

    Returns:
        The Markdown file written, or None when the round has no report.
    """
    report = record.outcome.get("report_path")
    if not report:
        return None
    path = Path(str(report))
    folder = path.parent
    if not folder.is_dir():
        logger.warning("the round report folder %s is gone; the agent's decisions are not added", folder)
        return None
    records = _since_previous_round(log, record)
    text = _markdown(records)
    (folder / "agent-decisions.md").write_text(text, encoding="utf-8")
    (folder / "agent-decisions.json").write_text(
        json.dumps([r.to_json() for r in records], indent=1, default=str) + "\n", encoding="utf-8"
    )
    if path.is_file():
        body = path.read_text(encoding="utf-8")
        body = body.split("\n" + _SECTION, 1)[0].rstrip("\n")
        path.write_text(body + "\n\n" + text, encoding="utf-8")
    return folder / "agent-decisions.md"
