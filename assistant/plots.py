"""Report figures written as PNG files: per-label AP before/after, PR curves, learning curves, reliability,
edits over time.

Every function builds its own ``matplotlib.figure.Figure`` on an Agg canvas, so nothing touches
pyplot's global state or the process-wide backend (safe in workers and tests without a display),
and matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assistant.errors import DataError
from assistant.evaluate import check_label_names, per_label_ap, validate_inputs
from preannotation import Reliability

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_edits_over_time", "plot_learning_curves", "plot_per_label_ap", "plot_pr_curves", "plot_reliability"]

logger = logging.getLogger(__name__)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas to this figure only
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    logger.debug("wrote %s", out)
    return out


def plot_per_label_ap(
    before: Mapping[str, float], after: Mapping[str, float], path: str | Path, *, title: str = "Per-label AP"
) -> Path:
    """Grouped horizontal bars of each label's AP before and after (e.g. a fine-tuning round).

    Labels are sorted by their "after" AP (highest on top); a label missing from one side has
    no bar there.

    Args:
        before: ``{label: AP}`` of the reference model (fractions or percent, as given).
        after: ``{label: AP}`` of the new model, same units.
        path: The PNG file to write (parent folders are created).
        title: Figure title.

    Returns:
        The written path.

    Raises:
        DataError: Both mappings are empty.
    """
    names = list(dict.fromkeys([*after, *before]))
    if not names:
        raise DataError("No labels to plot", fix="pass at least one label's AP")
    names.sort(key=lambda n: (after.get(n, float("-inf")), before.get(n, float("-inf"))))
    y = np.arange(len(names))
    # ~0.28 in per label keeps 80 labels readable (a 23 in tall figure) and 5 labels compact.
    fig = _new_figure(8.0, max(3.0, 0.28 * len(names) + 1.2))
    ax = fig.add_subplot()
    nan = float("nan")
    ax.barh(y - 0.2, [before.get(n, nan) for n in names], height=0.4, label="before", color="#9e9e9e")
    ax.barh(y + 0.2, [after.get(n, nan) for n in names], height=0.4, label="after", color="#1f77b4")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("AP")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_pr_curves(
    scores: ArrayLike, targets: ArrayLike, labels: Sequence[str], path: str | Path, *, max_labels: int = 10
) -> Path:
    """Precision-recall curves of the labels with the most positives, AP in the legend.

    Each curve uses that label's ±1 entries only (0 = unknown is excluded, as in the AP).

    Args:
        scores: Images × labels scores.
        targets: Same shape, +1 / -1 / 0.
        labels: One unique name per column.
        path: The PNG file to write (parent folders are created).
        max_labels: At most this many curves (the most frequent labels), to keep it legible.

    Returns:
        The written path.

    Raises:
        DataError: Bad arrays or names, ``max_labels < 1``, or no label has a positive.
    """
    s, t = validate_inputs(scores, targets)
    names = check_label_names(labels, s.shape[1])
    if max_labels < 1:
        raise DataError(f"Cannot plot PR curves with max_labels = {max_labels}", fix="pass max_labels >= 1")
    n_pos = (t == 1).sum(axis=0)
    # Most positives first; the stable sort keeps column order among equal counts.
    chosen = [int(c) for c in np.argsort(-n_pos, kind="stable")[:max_labels] if n_pos[c] > 0]
    if not chosen:
        raise DataError("No label has a positive entry, so there is no PR curve to draw")
    ap = per_label_ap(s[:, chosen], t[:, chosen])
    fig = _new_figure(7.0, 5.5)
    ax = fig.add_subplot()
    for j, c in enumerate(chosen):
        known = t[:, c] != 0
        hits = (t[known, c] == 1)[np.argsort(-s[known, c], kind="stable")]
        tp = np.cumsum(hits)
        precision = tp / np.arange(1, hits.size + 1)
        recall = tp / n_pos[c]
        # The raw sawtooth (one point per rank), not an interpolated envelope: it is what the
        # non-interpolated AP averages.
        ax.plot(recall, precision, linewidth=1.2, label=f"{names[c]} (AP {100 * ap[j]:.1f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall per label")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_learning_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    bands: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    dashed: Collection[str] = (),
    color_of: Mapping[str, str] | None = None,
) -> Path:
    """Line plot of one or more curves, e.g. mAP per round or per annotated-image budget.

    Args:
        curves: ``{name: [(x, y), ...]}``; points are drawn in the given order.
        path: The PNG file to write (parent folders are created).
        xlabel: X-axis label.
        ylabel: Y-axis label.
        title: Figure title.
        bands: Optional ``{name: [(low, high), ...]}`` shaded around the curve of the same name,
            one pair per point (e.g. min/max or mean ± std over seeds).
        dashed: Names of curves drawn dashed without markers (baselines, e.g. labeling from scratch).
        color_of: ``{name: other}``: draw curve ``name`` in the colour of the curve ``other`` drawn
            before it (a baseline beside its run).

    Returns:
        The written path.

    Raises:
        DataError: No curve, an empty curve, or a band whose length or name does not match.
    """
    if not curves or any(len(points) == 0 for points in curves.values()):
        raise DataError("Every learning curve needs at least one (x, y) point", fix="drop empty curves")
    bands = bands or {}
    for name, band in bands.items():
        if name not in curves or len(band) != len(curves[name]):
            raise DataError(
                f"Band {name!r} does not match a curve of the same name and length",
                fix="give one (low, high) pair per point of the curve with that name",
            )
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    colors: dict[str, Any] = {}
    for name, points in curves.items():
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        style: dict[str, Any] = {"linestyle": "--"} if name in dashed else {"marker": "o", "markersize": 3}
        if color_of and color_of.get(name) in colors:
            style["color"] = colors[color_of[name]]
        (line,) = ax.plot(xy[:, 0], xy[:, 1], label=name, **style)
        colors[name] = line.get_color()
        if name in bands:
            lo_hi = np.asarray(bands[name], dtype=np.float64).reshape(-1, 2)
            ax.fill_between(xy[:, 0], lo_hi[:, 0], lo_hi[:, 1], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(groups: Mapping[str, Reliability], path: str | Path, title: str) -> Path:
    """Reliability diagram: per probability bin, the observed frequency against the mean probability.

    A calibrated model lies on the diagonal; points below it overstate confidence (above 0.5,
    those tags are shown and then removed). The lower panel counts the entries per bin (log scale).

    Args:
        groups: ``{name: reliability}``, e.g. the labels a prior was fitted on and the others.
        path: The PNG file to write.
        title: Figure title.

    Raises:
        DataError: No group.
    """
    if not groups:
        raise DataError("a reliability diagram needs at least one group", fix="pass {name: reliability(...)}")
    fig = _new_figure(6.0, 6.5)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="calibrated")
    for name, rel in groups.items():
        used = [b for b in rel.bins if b.count]
        xs = [float(b.mean_probability or 0.0) for b in used]
        ys = [float(b.frequency or 0.0) for b in used]
        (line,) = top.plot(xs, ys, marker="o", markersize=4, label=f"{name} (ECE {rel.ece:.3f}, n={rel.count:,})")
        width = 1.0 / len(rel.bins)
        lows = [b.low for b in rel.bins]
        bottom.bar(
            lows,
            [max(b.count, 0) for b in rel.bins],
            width=width,
            align="edge",
            alpha=0.35,
            color=line.get_color(),
            edgecolor=line.get_color(),
        )
    top.set_ylabel("observed frequency")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(title)
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("entries")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _trailing_mean(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    out: NDArray[np.float64] = (sums[ends] - sums[starts]) / (ends - starts)
    return out


def plot_edits_over_time(
    edits: ArrayLike,
    scratch: ArrayLike,
    versions: Sequence[str],
    path: str | Path,
    *,
    window: int = 25,
    title: str = "Annotators' edits per task against labeling from scratch",
) -> Path:
    """Edits per task against from scratch, annotation after annotation, coloured by model version.

    Both lines are trailing means over ``window`` tasks; the from-scratch line (one add per true
    tag) is the baseline: below it, pre-annotation saves work; above it, it costs more.

    Args:
        edits: Per annotated task, in order: removes + adds.
        scratch: Per task: its true tags (the edits labeling it from scratch takes).
        versions: Per task: the model version of the prediction its annotator started from.
        path: The PNG file to write.
        window: Tasks per trailing mean.
        title: Figure title.

    Returns:
        The written path.

    Raises:
        DataError: No task, or the three sequences differ in length.
    """
    e = np.asarray(edits, dtype=np.float64).ravel()
    b = np.asarray(scratch, dtype=np.float64).ravel()
    if e.size == 0 or not e.size == b.size == len(versions) or window < 1:
        raise DataError(
            f"cannot plot {e.size} tasks' edits against {b.size} from-scratch counts and {len(versions)} versions",
            fix="pass one edit count, one true-tag count and one model version per annotated task, and window >= 1",
        )
    x = np.arange(1, e.size + 1)
    fig = _new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    smooth = _trailing_mean(e, window)
    ax.plot(x, _trailing_mean(b, window), color="0.35", linestyle="--", label="from scratch (true tags per task)")
    colours: dict[str, Any] = {}
    start = 0
    for i in range(1, e.size + 1):
        if i < e.size and versions[i] == versions[start]:
            continue
        version = versions[start]
        label = None if version in colours else f"edits per task: {version}"
        # One point of overlap joins consecutive stretches into one line.
        stop = min(i + 1, e.size)
        (line,) = ax.plot(x[start:stop], smooth[start:stop], color=colours.get(version), label=label)
        colours.setdefault(version, line.get_color())
        if start > 0:
            ax.axvline(start + 0.5, color="0.7", linestyle=":", linewidth=1)
        start = i
    ratio = e.sum() / b.sum() if b.sum() else float("nan")
    ax.set_xlabel("annotated tasks, in the order they were counted")
    ax.set_ylabel(f"per task (trailing mean of {window})")
    ax.set_title(f"{title}\n{int(e.size)} tasks: {e.sum() / e.size:.2f} edits against {b.sum() / e.size:.2f} "
                 f"from scratch ({ratio:.2f}x)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
