"""A project as the dashboard sees it, built from the real stores: registry, round log, reports, ledgers.

Used by the dashboard's route tests, its browser tests and ``benchmarks/bench_dashboard.py``.
Everything is written the way the components write it: versions through ``Registry.register``
and ``promote``, the effort through the effort ledger's ``record``, reports with
``workers.effort_report.add_effort_section`` (the real plot), decisions in the agent's own format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preannotation import EditCosts
from state.effort_records import CountedAnnotation, GuardState, TagAnswer
from state.ledger import Ledger
from state.registry import Registry

PROJECT = 3
TAGS = ("cat", "dog", "sofa", "tree")


@dataclass(frozen=True)
class World:
    """What was built: the versions, by round."""

    project: int
    versions: list[str]
    in_service: str


def _checkpoint(root: Path, version: str) -> Path:
    folder = root / f"ckpt-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = version.encode()
    (folder / "model.safetensors").write_bytes(weights)
    sidecar = {"version": version, "tensors_sha256": hashlib.sha256(weights).hexdigest()}
    (folder / "sidecar.json").write_text(json.dumps(sidecar), encoding="utf-8")
    return folder


def _round_entry(i: int, status: str, version: str | None, map_: float | None, delta: float | None) -> dict[str, Any]:
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i)
    entry: dict[str, Any] = {
        "project": PROJECT,
        "round_id": f"r{i:04d}",
        "status": status,
        "promoted": status == "promoted",
        "candidate_version": version,
        "current_version": version or "base",
        "trigger": ("agent", "manual", "schedule")[i % 3],
        "started_at": start.isoformat(timespec="seconds"),
        "finished_at": (start + dt.timedelta(minutes=7)).isoformat(timespec="seconds"),
        "metrics": {} if map_ is None else {"mAP": map_, "delta_mAP": delta or 0.0},
        "reason": {
            "promoted": f"mAP {map_} is better than the model in service",
            "kept": f"mAP {map_} is worse than the model in service beyond the tolerance (refused)",
            "failed": "the trainer rejected the label 'dog ' (whitespace)",
        }[status],
    }
    if status == "failed":  # as workers/rounds.py records a failed round
        entry.update(error="RuntimeError", attempted_version=f"mkt-p{PROJECT}-r{i:04d}")
    return entry


def build_small(models_dir: Path, registry: Registry, ledger: Ledger, *, costly: bool = True) -> World:
    """Project 3 with three rounds (promoted, refused, failed), reports with plots, effort and decisions.

    With ``costly``, the versions show wrong tags so that pre-annotation costs more than labeling from
    scratch (the Value page must say so); otherwise it saves.
    """
    from workers.effort_report import add_effort_section  # matplotlib: only where a report is drawn

    base = registry.base_version()
    staging = models_dir.parent / "staging"
    v1 = registry.register(
        _checkpoint(staging, "mkt-p3-r0001"),
        parent=base,
        project=PROJECT,
        round_id="r0001",
        metrics={"mAP": 41.2, "mAP_seen": 44.0, "mAP_novel": 30.5, "F1@3": 52.0},
    ).version
    v2 = registry.register(
        _checkpoint(staging, "mkt-p3-r0002"),
        parent=v1,
        project=PROJECT,
        round_id="r0002",
        metrics={"mAP": 39.8, "mAP_seen": 43.0, "mAP_novel": 25.0, "F1@3": 50.0},
    ).version
    registry.promote(PROJECT, v1)
    log = models_dir / "rounds" / str(PROJECT) / "rounds.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    entries = [
        _round_entry(1, "promoted", v1, 41.2, 3.1),
        _round_entry(2, "kept", v2, 39.8, -1.4),
        _round_entry(3, "failed", None, None, None),
    ]
    log.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")
    record_effort(ledger, PROJECT, [base, v1], costly=costly)
    for round_id in ("r0001", "r0002"):
        report = models_dir / "reports" / str(PROJECT) / round_id / "report.md"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            f"# Project {PROJECT}, round {round_id}\n\n| | mAP |\n|---|---|\n| candidate | 41.2 |\n\n"
            "<script>alert('not run')</script>\n",
            encoding="utf-8",
        )
        add_effort_section(ledger, PROJECT, report, v1, EditCosts())
    return World(PROJECT, [v1, v2], v1)


def record_effort(ledger: Ledger, project: int, versions: list[str], *, costly: bool) -> None:
    """Counted annotations of the first two versions (30 tasks, then 10).

    With ``costly`` the first version shows two wrong tags a task (3 edits against 2 from scratch) and
    the second one wrong tag (1 edit): 25% more edits than from scratch overall, while the version in
    service saves 50%. Otherwise both show exactly the true tags.
    """
    plan = [(versions[0], 30, {"cat", "sofa", "tree"}), (versions[1], 10, {"cat", "dog", "sofa"})]
    truth = {"cat", "dog"}
    batch = []
    n = 0
    for version, tasks, wrong in plan:
        shown = wrong if costly else truth
        for _ in range(tasks):
            n += 1
            answers = tuple(TagAnswer(t, t in shown, t in truth) for t in TAGS)
            at = (dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n)).isoformat()
            batch.append(CountedAnnotation(n, n, n, n, "parent", f"{version}+abc", "platt", None, answers, at))
    ledger.effort.record(project, through=n, counted=batch)
    if costly:  # the guard stopped showing 'sofa' under the version in service: shown 10 times, never kept
        reason = "kept 0 of 10 showings: it costs more than it saves"
        tripped = GuardState("sofa", "tripped", versions[1], reason=reason, changed_at="2026-12-01T00:41:00+00:00")
        ledger.effort.set_guard(project, tripped, "tripped", kept=0, removed=10)


# What the agent writes for each action (docs/agent.md), numbered by step so that tests can find a row.
_REASONS = {
    "preannotate": "unlabeled tasks have no prediction for mkt-p3-r0001+abc (new imports), step {i}",
    "select": "the queue is below its low water (12 < 20): choosing 100 more (hybrid), step {i}",
    "train": "{n} new corrections since the last round (threshold 50), step {i}",
    "review": "4 annotations the model strongly disagrees with (label quality below 0.3), step {i}",
    "guard": "the guard tripped 'sofa': it cost more than it saved, step {i}",
    "rescore": "the vocabulary changed: added 'tree', step {i}",
    "repredict": "the model in service changed from base to mkt-p3-r0001, step {i}",
}


def decision_rows(project: int, n: int, *, start: int = 0) -> list[tuple[Any, ...]]:
    """``n`` decisions in the agent's row format (``state/decision_log.py``): each key pending then done."""
    actions = ("preannotate", "select", "train", "review", "guard", "rescore", "repredict")
    rows: list[tuple[Any, ...]] = []
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    for i in range(start, start + n):
        action = actions[i % len(actions)]
        key = f"{action}:p{project}:{i}"
        params: dict[str, Any] = {"k": 100, "strategy": "hybrid"}
        outcome: dict[str, Any] = {
            "chosen": 100,
            "strategy": "hybrid",
            "first": [{"task": 1000 + j, "why": f"uncertain on 'dog' ({0.5 + j / 100:.2f})"} for j in range(5)],
        }
        if action == "review":
            params = {
                "flags": [
                    {
                        "task": 2000 + j,
                        "annotation": 3000 + j,
                        "quality": 0.05 * j,
                        "why": f"'cat' likely missed (p={0.97 - j / 50:.2f})",
                    }
                    for j in range(4)
                ]
            }
            outcome = {"flagged": 4, "queue": 4}
        if action == "train" and i % 5 == 0:
            status, outcome = "failed", {"error": "no answer from the workers in time"}
        else:
            status = "done"
        saw = {"tasks": 400 + i % 50, "unlabeled": 120, "queue": 12, "new_corrections": i % 40, "round": "free"}
        body = json.dumps(
            {"reason": _REASONS[action].format(i=i, n=i % 40 + 50), "params": params, "saw": saw, "status": "decided"},
            sort_keys=True,
        )
        at = (t0 + dt.timedelta(seconds=30 * i)).isoformat()
        rows.append((at, project, key, action, "pending", 1, body, "{}"))
        rows.append((at, project, key, action, status, 1, body, json.dumps(outcome, sort_keys=True)))
    return rows


def write_decisions(db: Path, rows: list[tuple[Any, ...]], prefix: str = "assistant_") -> None:
    """Append rows to the decision log's SQLite file in one transaction (the table must exist)."""
    con = sqlite3.connect(db)
    try:
        with con:
            con.executemany(
                f"INSERT INTO {prefix}agent_decisions (at, project, key, action, status, attempt, decision, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        con.close()
