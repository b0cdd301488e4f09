"""Report figures: each function writes a real PNG and refuses input it cannot draw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import DataError
from assistant.plots import plot_learning_curves, plot_per_label_ap, plot_pr_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, written: Path) -> None:
    assert written == path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    # An empty 100-dpi canvas is ~2-3 KB; bars, curves and text push every figure here past 8 KB.
    assert len(data) > 8_000


def test_per_label_ap(tmp_path):
    before = {"cat": 0.2, "dog": 0.5, "car": 0.9}
    after = {"cat": 0.4, "dog": 0.6, "car": 0.85, "novel": 0.1}
    path = tmp_path / "nested" / "ap.png"
    _assert_png(path, plot_per_label_ap(before, after, path, title="Round 1"))
    with pytest.raises(DataError, match="No labels"):
        plot_per_label_ap({}, {}, tmp_path / "empty.png")


def test_pr_curves(tmp_path):
    rng = np.random.default_rng(0)
    targets = np.where(rng.random((80, 6)) < 0.3, 1, -1)
    targets[:10, 0] = 0
    targets[:, 5] = -1  # no positive: never drawn
    scores = rng.random((80, 6)) + 0.5 * targets
    path = tmp_path / "pr.png"
    _assert_png(path, plot_pr_curves(scores, targets, list("abcdef"), path, max_labels=4))
    with pytest.raises(DataError, match="No label has a positive"):
        plot_pr_curves(scores, -np.ones_like(targets), list("abcdef"), tmp_path / "none.png")
    with pytest.raises(DataError, match="max_labels"):
        plot_pr_curves(scores, targets, list("abcdef"), tmp_path / "none.png", max_labels=0)


def test_learning_curves_with_band(tmp_path):
    curves = {"uncertainty": [(100, 40.0), (200, 48.0), (400, 55.0)], "random": [(100, 40.0), (200, 44.0)]}
    bands = {"uncertainty": [(38.0, 42.0), (46.0, 50.0), (53.0, 57.0)]}
    path = tmp_path / "al.png"
    _assert_png(path, plot_learning_curves(curves, path, "annotated images", "mAP (%)", "Active learning", bands=bands))
    with pytest.raises(DataError, match="Band 'random'"):
        plot_learning_curves(curves, path, "x", "y", "t", bands={"random": [(0.0, 1.0)]})
    with pytest.raises(DataError, match="at least one"):
        plot_learning_curves({"empty": []}, path, "x", "y", "t")


def test_importing_plots_has_no_side_effects():
    # Drawing selects Agg per figure; importing must not even load matplotlib.
    code = "import sys, assistant.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
