"""Calibration priors for backbones: a global-only calibrator stored next to a model's weights.

Before any annotation exists, a zero-shot model maps its raw scores to probabilities with a
prior. :meth:`Calibrator.default() <assistant.calibration.Calibrator.default>` assumes CLIP
ViT-B cosines (matches ~0.3, non-matches ~0.2); a backbone whose cosines are distributed
otherwise (the benchmark world's tiny model scores most labels far above 0.25) then shows every
tag at probability ~1. So a model directory can carry its own prior, ``calibration.json``
(:data:`~assistant.checkpoint.PRIOR_FILE`), which :func:`~assistant.checkpoint.load_model` uses
instead of the default.

The prior is fitted here on annotated images with :meth:`Calibrator.fit_prior
<assistant.calibration.Calibrator.fit_prior>` (one pooled logistic map and one F1-optimal
threshold, no per-label entries: the labels served later are unknown), from raw scores computed
exactly as the tagger computes them at serve time: the model built by ``load_model`` (default
head and prompt), PIL images through the backbone's preprocessing, ``cosine`` fused scores.

Example:
    >>> fit = fit_backbone_prior("assets/world-tiny", images, targets, labels)   # doctest: +SKIP
    >>> write_prior(Path("assets/world-tiny"), fit, provenance={"split": "val"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from assistant.backbones.registry import BackboneSpec
from assistant.calibration import Calibrator, FitConfig
from assistant.checkpoint import PRIOR_FILE, LoadedModel, is_checkpoint, load_model
from assistant.errors import ConfigError, DataError
from assistant.inference import Tagger
from preannotation import EditCosts, EffortTotals, Reliability, reliability, show_mask

__all__ = [
    "MANIFEST_FILE",
    "CalibrationCheck",
    "PriorFit",
    "check_calibration",
    "fit_backbone_prior",
    "model_directory",
    "prior_raw_scores",
    "write_prior",
]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
# Images per tagger call: bounds the memory of the patch features (512 x 64 patches x 128 floats
# is 16 MB for the world model) while keeping the text tower's one pass per label amortised.
_CHUNK = 512

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PriorFit:
    """A fitted prior and how it does on the data it was fitted on.

    Attributes:
        calibrator: The prior (``method="prior"``, global map and threshold only).
        images: Images scored.
        labels: Label columns scored.
        positives: Known +1 entries.
        negatives: Known -1 entries.
        precision, recall, f1: Pooled over the known entries at the prior's threshold.
        mean_positive, mean_negative: Mean raw score of the +1 and of the -1 entries.
    """

    calibrator: Calibrator
    images: int
    labels: int
    positives: int
    negatives: int
    precision: float
    recall: float
    f1: float
    mean_positive: float
    mean_negative: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (the map, the threshold and the fit statistics)."""
        cal = self.calibrator
        return {
            "method": cal.method,
            "slope": cal.slope,
            "intercept": cal.intercept,
            "threshold": cal.threshold,
            # The raw score at which p equals the threshold: logit(threshold) = slope * s + intercept.
            "raw_threshold": _raw_threshold(cal),
            "images": self.images,
            "labels": self.labels,
            "positives": self.positives,
            "negatives": self.negatives,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "mean_raw_positive": round(self.mean_positive, 5),
            "mean_raw_negative": round(self.mean_negative, 5),
        }


def _raw_threshold(cal: Calibrator) -> float | None:
    thr = min(max(cal.threshold, 1e-12), 1.0 - 1e-12)
    if cal.slope <= 0.0:
        return None
    return float((np.log(thr / (1.0 - thr)) - cal.intercept) / cal.slope)


def model_directory(source: str | Path) -> Path:
    """The model directory a prior belongs to: ``local-dir:DIR``, a plain directory or ``hf:DIR``.

    Raises:
        ConfigError: ``source`` is a hub or architecture name, a missing directory, or an MKT
            checkpoint (which keeps the calibrator in its sidecar).
    """
    if is_checkpoint(source):
        raise ConfigError(
            f"{source} is an MKT checkpoint",
            why="a checkpoint keeps the calibrator fitted on its own validation data in sidecar.json",
            fix="calibrate the base model directory instead",
        )
    spec = BackboneSpec.parse(str(source))
    directory = Path(spec.name)
    if not spec.backbone_kind.directory or not directory.is_dir():
        raise ConfigError(
            f"{source} is not a local model directory",
            why="a calibration prior is stored as calibration.json next to the weights of a model directory",
            fix="pass an open_clip model directory (e.g. assets/world-tiny) or hf:DIR",
        )
    return directory


def prior_raw_scores(
    loaded: LoadedModel,
    images: NDArray[np.uint8],
    labels: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 0,
    progress: ProgressFn | None = None,
) -> NDArray[np.float64]:
    """Raw scores as the tagger computes them at serve time (PIL images, ``cosine`` fused scores).

    Args:
        loaded: The model as :func:`~assistant.checkpoint.load_model` builds it.
        images: ``(N, H, W, 3)`` uint8 RGB.
        labels: The label names scored.
        device: Where to run the model.
        batch_size: Images per forward pass; 0 adapts it to the device.
        progress: Called as ``progress(done, total)`` after each chunk of images.

    Returns:
        ``(N, len(labels))`` raw scores.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"expected (N, H, W, 3) uint8 images, got {images.dtype} {images.shape}",
            fix="pass RGB images as one uint8 array",
        )
    tagger = Tagger(loaded, device=device, batch_size=batch_size)
    parts: list[NDArray[Any]] = []
    for start in range(0, len(images), _CHUNK):
        chunk = [Image.fromarray(im) for im in images[start : start + _CHUNK]]
        parts.append(tagger.raw_scores(tagger.features(chunk), list(labels)))
        if progress is not None:
            progress(min(start + _CHUNK, len(images)), len(images))
    if not parts:
        raise DataError("no images to calibrate on", fix="pass at least one annotated image")
    raw: NDArray[np.float64] = np.concatenate(parts).astype(np.float64)
    return raw


def fit_backbone_prior(
    source: str | Path,
    images: NDArray[np.uint8],
    targets: ArrayLike,
    labels: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 0,
    config: FitConfig | None = None,
    progress: ProgressFn | None = None,
) -> PriorFit:
    """Fit a model directory's calibration prior on annotated images.

    Args:
        source: The model directory (``local-dir:DIR``, ``DIR`` or ``hf:DIR``).
        images: ``(N, H, W, 3)`` uint8 RGB.
        targets: ``(N, len(labels))``: +1 present, -1 absent, 0 unknown (ignored).
        labels: The annotated labels (column names).
        device: Where to run the model.
        batch_size: Images per forward pass; 0 adapts it to the device.
        config: Minimum counts and priors of the fit.
        progress: Called as ``progress(done, total)`` while scoring.

    Returns:
        The prior and its pooled figures on the same data.

    Raises:
        ConfigError: ``source`` is not a local model directory.
        DataError: Mismatched arrays, or too few positives or negatives.
    """
    directory = model_directory(source)
    t = np.asarray(targets)
    if t.shape != (len(images), len(labels)):
        raise DataError(
            f"targets of shape {t.shape} do not match {len(images)} images and {len(labels)} labels",
            fix="pass one target row per image and one column per label",
        )
    # The default head and prompt: the model a zero-shot tagger serves from this directory.
    loaded = load_model(str(source), device=device)
    raw = prior_raw_scores(loaded, images, labels, device=device, batch_size=batch_size, progress=progress)
    cal = Calibrator.fit_prior(raw, t, list(labels), config)
    known = t != 0
    truth = t[known] == 1
    decided = cal.predict(raw, list(labels))[known]
    tp = int(np.sum(decided & truth))
    n_pos, n_pred = int(truth.sum()), int(decided.sum())
    fit = PriorFit(
        calibrator=cal,
        images=len(images),
        labels=len(labels),
        positives=n_pos,
        negatives=int(truth.size - n_pos),
        precision=tp / n_pred if n_pred else 0.0,
        recall=tp / n_pos if n_pos else 0.0,
        f1=2 * tp / (n_pred + n_pos) if n_pred + n_pos else 0.0,
        mean_positive=float(raw[known][truth].mean()),
        mean_negative=float(raw[known][~truth].mean()),
    )
    logger.info("calibration prior of %s: %s", directory, fit.summary())
    return fit


@dataclass(frozen=True)
class CalibrationCheck:
    """How a model's probabilities compare with the truth on labeled images it was not calibrated on.

    Attributes:
        reliability: Reliability bins, ECE and overconfidence of every (image, label) entry.
        effort: What the break-even rule would show from these probabilities, against the truth:
            edits (wrong tags shown plus true tags not shown) against one add per true tag.
        images: Images scored.
        labels: Labels scored.
    """

    reliability: Reliability
    effort: EffortTotals
    images: int
    labels: int

    def summary(self, costs: EditCosts | None = None) -> dict[str, Any]:
        """JSON-ready figures (the reliability bins included)."""
        e = self.effort
        return {
            "images": self.images,
            "labels": self.labels,
            **self.reliability.summary(),
            "rule": {
                **e.summary(),
                "shown_per_image": round((e.kept + e.removed) / e.tasks, 3) if e.tasks else None,
                "cost_ratio": None if e.cost_ratio(costs) is None else round(float(e.cost_ratio(costs) or 0.0), 4),
            },
        }


def check_calibration(
    loaded: LoadedModel,
    images: NDArray[np.uint8],
    truth: ArrayLike,
    labels: Sequence[str],
    *,
    costs: EditCosts | None = None,
    bins: int = 10,
    device: str | torch.device = "cpu",
    batch_size: int = 0,
    progress: ProgressFn | None = None,
) -> CalibrationCheck:
    """Score labeled images as they are served and compare the probabilities with the truth.

    Use images the calibrator was not fitted on (for a prior: not its validation images), so that
    the check is out of sample.

    Args:
        loaded: The model with the calibrator to check (a prior, the default, or a round's).
        images: ``(N, H, W, 3)`` uint8 RGB.
        truth: ``(N, len(labels))`` booleans: the complete labels.
        labels: The label names scored.
        costs: Edit costs of the pre-annotation rule (equal when None).
        bins: Reliability bins.
        device: Where to run the model.
        batch_size: Images per forward pass; 0 adapts it to the device.
        progress: Called as ``progress(done, total)`` while scoring.

    Raises:
        DataError: ``truth`` does not have one row per image and one column per label.
    """
    y = np.asarray(truth, dtype=bool)
    if y.shape != (len(images), len(labels)):
        raise DataError(
            f"truth of shape {y.shape} does not match {len(images)} images and {len(labels)} labels",
            fix="pass one row per image and one column per label",
        )
    raw = prior_raw_scores(loaded, images, labels, device=device, batch_size=batch_size, progress=progress)
    p = loaded.calibrator.apply(raw, list(labels))
    shown = show_mask(p, costs)
    return CalibrationCheck(
        reliability(p, y, bins), EffortTotals.from_arrays(shown, y, costs), len(images), len(labels)
    )


def write_prior(directory: Path, fit: PriorFit, *, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``calibration.json`` and record the prior in ``manifest.json`` when there is one.

    ``calibration.json`` is :meth:`Calibrator.to_dict` output plus a ``provenance`` entry (the
    fit figures and ``provenance``), which :meth:`Calibrator.from_dict` ignores. Both files are
    replaced atomically, so a crash never leaves a half-written one.

    Args:
        directory: The model directory.
        fit: The fitted prior.
        provenance: What it was fitted on (e.g. the split name and data hash).

    Returns:
        The path of ``calibration.json``.
    """
    record = {**fit.summary(), **(provenance or {})}
    path = directory / PRIOR_FILE
    _write_json(path, {**fit.calibrator.to_dict(), "provenance": record})
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["calibration_prior"] = {"file": PRIOR_FILE, **record}
        _write_json(manifest_path, manifest)
    return path


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary readable JSON files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
