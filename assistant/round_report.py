"""The report of a fine-tuning round: Markdown, PNG figures and a JSON summary, written atomically.

::

    <directory>/report.md          what was trained on, both models' held-out metrics, the decision
    <directory>/per_label_ap.png   every evaluable label's AP, current model vs candidate
    <directory>/pr_curves.png      the candidate's precision-recall curves (most frequent labels)
    <directory>/pr_curves_current.png   the same for the current model
    <directory>/round.json         the same facts for programs

The directory is assembled under a temporary name next to it and renamed into place, so a round
killed while writing leaves no half report (only a ``.tmp-*`` folder the next round removes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assistant.errors import DataError
from assistant.plots import plot_per_label_ap, plot_pr_curves
from assistant.round_eval import Evaluation
from assistant.rounds import RoundOutcome

__all__ = ["REPORT_FILE", "clean_stale_reports", "write_round_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
SUMMARY_FILE = "round.json"
# Temporary report folders older than this are leftovers of a killed round.
_STALE_S = 3600.0
_METRIC_ROWS = (
    "mAP",
    "mAP_seen",
    "mAP_novel",
    "edits_per_task",
    "scratch_per_task",
    "edits_vs_scratch",
    "F1@3",
    "P@3",
    "R@3",
    "labels_evaluated",
    "images",
)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
        return f"{value:.0f}"
    return f"{value:.2f}"


def _metrics_table(current: Evaluation, candidate: Evaluation) -> list[str]:
    keys = [k for k in _METRIC_ROWS if k in current.metrics or k in candidate.metrics]
    keys += sorted((set(current.metrics) | set(candidate.metrics)) - set(keys) - {"labels_seen_evaluated"})
    rows = ["| metric | current | candidate | change |", "|---|---:|---:|---:|"]
    for key in keys:
        old, new = current.metrics.get(key), candidate.metrics.get(key)
        change = (
            _fmt(new - old) if old is not None and new is not None and not key.startswith(("labels", "images")) else ""
        )
        rows.append(f"| {key} | {_fmt(old)} | {_fmt(new)} | {change} |")
    return rows


def _label_table(outcome: RoundOutcome, limit: int = 40) -> list[str]:
    before, after = outcome.current.per_label_ap, outcome.evaluated.per_label_ap
    names = sorted(after, key=lambda n: -(abs(after[n] - before.get(n, 0.0))))[:limit]
    rows = ["| label | kind | current AP | candidate AP | change |", "|---|---|---:|---:|---:|"]
    for name in names:
        kind = (
            "seen"
            if name in outcome.seen
            else ("novel, trained now" if name in outcome.candidate.newly_seen else "novel")
        )
        old, new = before.get(name), after[name]
        change = "" if old is None else f"{100 * (new - old):+.1f}"
        before_ap = "–" if old is None else f"{100 * old:.1f}"
        rows.append(f"| {name} | {kind} | {before_ap} | {100 * new:.1f} | {change} |")
    if len(after) > limit:
        rows.append(f"\n({len(after) - limit} more labels in round.json and the figure.)")
    return rows


def _history_rows(outcome: RoundOutcome) -> list[str]:
    rows = [
        "| stage | steps | seconds | loss per epoch | validation per epoch | kept epoch |",
        "|---|---:|---:|---|---|---:|",
    ]
    for h in outcome.candidate.histories:
        losses = ", ".join(f"{x:.3f}" for x in h.epoch_losses)
        vals = ", ".join(f"{100 * x:.1f}" for x in h.val_scores) or "– (no validation split)"
        rows.append(f"| {h.stage} | {h.steps} | {h.seconds:.1f} | {losses} | {vals} | {_fmt(h.best_epoch)} |")
    return rows


def _markdown(outcome: RoundOutcome, title: str, context: Mapping[str, Any], figures: list[str]) -> str:
    d = outcome.decision
    zero_shot = [n for n in outcome.labels if n not in outcome.candidate.trained_labels and n not in outcome.seen]
    newly = ", ".join(outcome.candidate.newly_seen) or "none"
    seconds = outcome.seconds
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items() if v is not None]
    lines += [
        "",
        f"**Decision: {'promote' if d.promote else 'keep the current model'}.** {d.reason}.",
        "",
        "## Data",
        "",
        "| split | images |",
        "|---|---:|",
        *[f"| {k.removesuffix('_images')} | {v} |" for k, v in outcome.data_summary.items() if k.endswith("_images")],
        "",
        f"Vocabulary: {len(outcome.labels)} labels; trained on {len(outcome.candidate.trained_labels)} "
        f"({len(outcome.candidate.newly_seen)} newly seen: {newly}); "
        f"still zero-shot: {', '.join(zero_shot) or 'none'}.",
        f"Data manifest hash: `{outcome.manifest_hash}`.",
        "",
        "## Held-out metrics",
        "",
        "mAP: mean AP (percent) over labels with a positive and a negative held-out answer, on raw cosine "
        "scores; seen/novel by the current model's seen labels. F1/P/R@K: micro top-K over the vocabulary on "
        "cross-fitted calibrated probabilities. edits_per_task: the edits an annotator would make on the tags the "
        f"pre-annotation rule shows from the same probabilities (break-even {outcome.config.costs.break_even:.2f}, "
        f"at most {outcome.config.max_tags} tags), against scratch_per_task (one add per true tag); "
        "edits_vs_scratch is their cost-weighted ratio (below 1: pre-annotation saves work). A candidate whose "
        f"edits_vs_scratch is higher by more than {outcome.config.edits_tolerance:g} is not promoted.",
        "",
        *_metrics_table(outcome.current, outcome.evaluated),
        "",
        "## Per-label AP (largest changes first)",
        "",
        *_label_table(outcome),
        "",
        "## Training",
        "",
        *_history_rows(outcome),
        "",
        f"Time: training {seconds.get('train', 0.0):.1f} s, evaluation {seconds.get('evaluate', 0.0):.1f} s.",
        "",
    ]
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _summary(outcome: RoundOutcome, context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "context": dict(context),
        "decision": {
            "promote": outcome.decision.promote,
            "reason": outcome.decision.reason,
            "delta_mAP": outcome.decision.delta if math.isfinite(outcome.decision.delta) else None,
            "delta_edits_vs_scratch": (
                outcome.decision.edits_delta if math.isfinite(outcome.decision.edits_delta) else None
            ),
        },
        "preannotation": {
            "costs": outcome.config.costs.to_dict(),
            "max_tags": outcome.config.max_tags,
            "edits_tolerance": outcome.config.edits_tolerance,
        },
        "data": outcome.data_summary,
        "manifest_hash": outcome.manifest_hash,
        "trained_labels": list(outcome.candidate.trained_labels),
        "newly_seen": list(outcome.candidate.newly_seen),
        "current": {
            "version": outcome.current.version,
            "metrics": outcome.current.metrics,
            "per_label_ap": outcome.current.per_label_ap,
        },
        "candidate": {
            "version": outcome.evaluated.version,
            "metrics": outcome.evaluated.metrics,
            "per_label_ap": outcome.evaluated.per_label_ap,
        },
        "training": [
            {
                "stage": h.stage,
                "steps": h.steps,
                "seconds": h.seconds,
                "epoch_losses": h.epoch_losses,
                "val_scores": h.val_scores,
                "best_epoch": h.best_epoch,
            }
            for h in outcome.candidate.histories
        ],
        "seconds": outcome.seconds,
    }


def _figures(outcome: RoundOutcome, tmp: Path) -> list[str]:
    written: list[str] = []
    labels = list(outcome.labels)
    if outcome.evaluated.per_label_ap:
        plot_per_label_ap(
            outcome.current.per_label_ap,
            outcome.evaluated.per_label_ap,
            tmp / "per_label_ap.png",
            title="Held-out AP per label: current vs candidate",
        )
        written.append("per_label_ap.png")
    for name, evaluation in (("pr_curves.png", outcome.evaluated), ("pr_curves_current.png", outcome.current)):
        try:
            plot_pr_curves(evaluation.raw_scores, outcome.heldout_targets, labels, tmp / name)
        except DataError as exc:  # no held-out positive at all: nothing to draw
            logger.info("no PR curves: %s", exc.message)
            continue
        written.append(name)
    return written


def write_round_report(
    outcome: RoundOutcome, directory: Path, *, title: str, context: Mapping[str, Any] | None = None
) -> Path:
    """Write the round's report folder (replacing an older one of the same round) and return ``report.md``.

    Args:
        outcome: What :func:`assistant.rounds.run_round` returned.
        directory: The report folder, e.g. ``<models_dir>/reports/<project>/<round_id>``.
        title: The report's heading.
        context: Facts shown at the top (project, round id, versions, trigger ...), JSON-ready.
    """
    context = dict(context or {})
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}.", dir=directory.parent))
    try:
        figures = _figures(outcome, tmp)
        (tmp / REPORT_FILE).write_text(_markdown(outcome, title, context, figures), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(
            json.dumps(_summary(outcome, context), indent=2, default=str) + "\n", encoding="utf-8"
        )
        if directory.exists():
            old = directory.with_name(f".tmp-old-{directory.name}-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory / REPORT_FILE


def clean_stale_reports(root: Path, max_age_s: float = _STALE_S) -> int:
    """Remove temporary report folders under ``root`` older than ``max_age_s`` (a killed round's); returns the count."""
    removed = 0
    if not Path(root).is_dir():
        return 0
    for entry in Path(root).glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed
