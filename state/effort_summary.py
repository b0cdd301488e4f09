"""What the effort ledger says about a project, as JSON-ready figures (``status``, ``effort``, ``/metrics``, the agent).

:func:`project_effort` reads the stored totals (never the rows, so it costs the same on 100 or
100,000 annotations) and derives, against labeling from scratch (one add per true tag):

- **edits per task** (removes + adds) and **from scratch per task** (true tags), their
  **ratio**, and the **share of work saved** ``1 - ratio`` (negative: pre-annotation cost more);
- the **precision** (kept / shown) and **recall** (kept / true) of the shown tags;
- the **share of tasks that cost more** than labeling them from scratch;

overall, for the model version in service, per model version and per tag; plus what is still
to count and the last counting failure, the project's calibration (what the model served with,
its refits) and the guard's tripped tags. The reading guide is ``docs/preannotation.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from preannotation import EditCosts, EffortTotals
from state.effort import EffortStore
from state.effort_records import RefitRecord, TagTotals, VersionEffort
from state.ledger import Ledger

__all__ = ["calibration_state", "edits_series", "project_effort", "tag_figures", "totals_of"]

#: What each kind of model calibration means for the served probabilities.
_KINDS = {
    "platt": "fitted on annotations in a fine-tuning round",
    "prior": "a prior fitted on the backbone's own scores",
    "default": "never measured (an uninformed prior)",
}


def totals_of(versions: list[VersionEffort]) -> EffortTotals:
    """The sum of some model versions' effort."""
    out = EffortTotals()
    for v in versions:
        out = out + v.totals
    return out


def _figures(totals: EffortTotals, costs: EditCosts) -> dict[str, Any]:
    out = totals.summary()
    ratio = totals.cost_ratio(costs)
    out["cost_ratio"] = None if ratio is None else round(ratio, 4)
    return out


def _refit(record: RefitRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    out: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "answers": record.answers,
        "annotations": record.annotations,
        "at": record.at,
    }
    if record.error:
        out["error"] = record.error
    if record.recalibration is not None:
        pooled = record.recalibration.pooled
        out["pooled"] = {"slope": round(pooled.slope, 4), "intercept": round(pooled.intercept, 4)}
        out["own_maps"] = len(record.recalibration.tags)
    return out


def calibration_state(store: EffortStore, project: int, checkpoint: str) -> dict[str, Any]:
    """What calibrates the probabilities served to the project by ``checkpoint`` (for people and ``--json``).

    Keys: ``model`` (the kind the workers reported: ``platt``, ``prior``, ``default``; None before
    the first prediction), ``refit`` (the latest refit, fitted or failed), ``in_service`` (the refit
    applied now), ``conservative`` (few, confident tags while the model's calibration is unmeasured
    and the project has no refit) and ``note``.
    """
    kind = store.serving(project, checkpoint)
    last = store.last_refit(project, checkpoint)
    fitted = (
        last
        if last is not None and last.status == "fitted"
        else store.last_refit(project, checkpoint, fitted_only=True)
    )
    conservative = kind == "default" and fitted is None
    if kind is None:
        note = f"{checkpoint} has not served this project yet"
    elif conservative:
        note = (
            f"the model's calibration was never measured ({kind}): serving few, confident tags until the "
            "project's first annotations calibrate it"
        )
    else:
        note = f"model calibration: {_KINDS.get(kind, kind)}"
    if fitted is not None:
        note += f"; project refit {fitted.id} on {fitted.answers} answers in service"
    if last is not None and last.status == "failed":
        note += f"; the last refit ({last.id}) failed: {last.error}"
    return {
        "model": kind,
        "refit": _refit(last),
        "in_service": None if fitted is None else fitted.id,
        "conservative": conservative,
        "note": note,
    }


def project_effort(
    ledger: Ledger, project: int, checkpoint: str | None, costs: EditCosts, *, tags: bool = True
) -> dict[str, Any]:
    """Every figure of the module docstring for one project.

    Args:
        ledger: The corrections ledger (its effort store, and the rows still to count).
        project: The project.
        checkpoint: The checkpoint serving it (None when the registry cannot say).
        costs: The project's edit costs (the cost-weighted ratio, the break-even).
        tags: Include the per-tag figures (all model versions).
    """
    store = ledger.effort
    state = store.state(project)
    versions = store.versions(project)
    serving = [v for v in versions if v.checkpoint == checkpoint]
    guard = store.guard(project)
    tripped = [g for g in guard.values() if g.state == "tripped" and g.checkpoint == checkpoint]
    out: dict[str, Any] = {
        "costs": {**costs.to_dict(), "break_even": round(costs.break_even, 4)},
        "counting": {
            "counted": state.counted,
            "pending": ledger.count(project, state.counted_through),
            "skipped": dict(state.skipped),
            "failures": state.failures,
            "error": state.error,
            "error_at": state.error_at,
            "updated_at": state.updated_at,
        },
        "totals": _figures(totals_of(versions), costs),
        "in_service": _figures(totals_of(serving), costs) if serving else None,
        "versions": [
            {
                "model_version": v.model_version,
                "checkpoint": v.checkpoint,
                "first_at": v.first_at,
                "last_at": v.last_at,
                **_figures(v.totals, costs),
            }
            for v in versions
        ],
        "calibration": None if checkpoint is None else calibration_state(store, project, checkpoint),
        "guard": {
            "tripped": [
                {"tag": g.tag, "checkpoint": g.checkpoint, "since": g.changed_at, "reason": g.reason} for g in tripped
            ],
            "events": store.last_guard_event(project),
        },
    }
    if tags:
        out["tags"] = tag_figures(store.tag_totals(project), costs, {g.tag for g in tripped})
    return out


def tag_figures(totals: Mapping[str, TagTotals], costs: EditCosts, tripped: Set[str]) -> dict[str, dict[str, Any]]:
    """Per tag: kept, removed, added, precision, recall, work saved, novel, whether the guard tripped it."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return {
        t.tag: {
            "kept": t.effort.kept,
            "removed": t.effort.removed,
            "added": t.effort.added,
            "precision": r(t.effort.precision),
            "recall": r(t.effort.recall),
            "saved": round(t.effort.saved(costs), 4),
            "novel": t.novel,
            "guard": "tripped" if t.tag in tripped else None,
        }
        for t in totals.values()
    }


def edits_series(store: EffortStore, project: int, *, page: int = 5000) -> tuple[list[int], list[int], list[str]]:
    """Per counted annotation, in counting order: edits, edits from scratch (true tags), model version.

    What the edits-over-time plot draws (``assistant.plots.plot_edits_over_time``); read in keyset pages.
    """
    edits: list[int] = []
    scratch: list[int] = []
    versions: list[str] = []
    after = 0
    while rows := store.page(project, after=after, limit=page):
        for r in rows:
            edits.append(r.removed + r.added)
            scratch.append(r.kept + r.added)
            versions.append(r.model_version)
        after = rows[-1].seq
    return edits, scratch, versions
