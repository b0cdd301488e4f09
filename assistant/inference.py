"""Tagging images with any vocabulary: ranked tags with calibrated scores, seen/novel marks.

The two stages are separate so that image features can be cached (the workers' feature cache):
:meth:`Tagger.features` runs the image tower once, and :meth:`Tagger.tag_features` scores any
vocabulary against those features, which for a changed vocabulary costs one text-tower pass per
new label and a matrix product.

Scores are the vocabulary-independent ``cosine`` head mode mapped through the checkpoint's
calibrator, so a threshold means the same thing whatever else is in the vocabulary
(docs/method.md §9.1: the method's own normalised score is not usable for thresholds). A tag is
*selected* (it would be pre-annotated) by the pre-annotation rule: its probability reaches the
break-even point of the edit costs (:func:`preannotation.show_mask`; 0.5 at equal costs), not the
calibrator's F1-optimal threshold, which serves evaluation only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from assistant.backbone import ImageFeatures
from assistant.calibration import Calibrator
from assistant.checkpoint import LoadedModel
from assistant.devices import autocast_for, default_batch_size, resolve_device
from assistant.errors import DataError
from assistant.model import MKTModel
from preannotation import EditCosts, show_mask

__all__ = ["ImageTags", "Tag", "Tagger", "autocast_for", "resolve_device"]


@dataclass(frozen=True)
class Tag:
    """One label's verdict for one image."""

    label: str
    # Calibrated score in [0, 1].
    score: float
    # True when the model was trained on the label; False for a novel (zero-shot) tag.
    seen: bool
    # Whether it would be pre-annotated: the score reaches the break-even point of the edit costs.
    selected: bool
    # That break-even point (0.5 at equal costs).
    threshold: float


@dataclass(frozen=True)
class ImageTags:
    """All labels for one image, best first."""

    tags: tuple[Tag, ...]

    def selected(self) -> list[Tag]:
        """The tags that would be pre-annotated, best first."""
        return [t for t in self.tags if t.selected]


class Tagger:
    """Pre-annotation: images in, ranked calibrated tags out.

    Args:
        loaded: A loaded model with its calibrator.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda:0`` ...
        batch_size: Images per forward pass; 0 adapts it to the device.
    """

    def __init__(self, loaded: LoadedModel, *, device: str | torch.device | None = "auto", batch_size: int = 0) -> None:
        self.device = resolve_device(device)
        self.model: MKTModel = loaded.model.to(self.device).eval()
        self.calibrator: Calibrator = loaded.calibrator
        self.batch_size = batch_size or default_batch_size(self.device)
        self._preprocess = self.model.backbone.preprocess()

    @property
    def version(self) -> str:
        """The model version (what Label Studio's ``model_version`` starts with)."""
        return self.model.version

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Decoded PIL images to a normalised batch tensor."""
        if not images:
            raise DataError("no images to tag", fix="pass at least one image")
        return torch.stack([self._preprocess(im.convert("RGB")) for im in images])

    def _batches(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> ImageFeatures:
        """Features of a preprocessed batch (any size; split into device batches), on the CPU in fp32."""
        parts = []
        for sl in self._batches(pixels.shape[0]):
            with autocast_for(self.device):
                feats = self.model.encode_images(pixels[sl].to(self.device, non_blocking=True))
            parts.append(feats.to("cpu", torch.float32))
        return ImageFeatures.cat(parts)

    def features(self, images: Sequence[Image.Image]) -> ImageFeatures:
        """Features of PIL images."""
        return self.encode(self.preprocess(images))

    @torch.inference_mode()
    def raw_scores(self, features: ImageFeatures, labels: Sequence[str]) -> NDArray[Any]:
        """Uncalibrated cosine-mode fused scores ``(N, C)``."""
        if not labels:
            raise DataError("the vocabulary is empty", fix="pass at least one label")
        emb = self.model.label_embeddings(list(labels)).float().cpu()
        outs = []
        for sl in self._batches(len(features)):
            part = features.index(sl)
            outs.append(self.model.score(part, emb, mode="cosine").fused.float().numpy())
        return np.concatenate(outs)

    def probabilities(self, features: ImageFeatures, labels: Sequence[str]) -> NDArray[Any]:
        """Calibrated scores in [0, 1], ``(N, C)``."""
        return self.calibrator.apply(self.raw_scores(features, labels), list(labels))

    def tag_features(
        self, features: ImageFeatures, labels: Sequence[str], costs: EditCosts | None = None
    ) -> list[ImageTags]:
        """Ranked tags for cached features, selected by the pre-annotation rule of ``costs`` (equal when None)."""
        labels = list(labels)
        probs = np.asarray(self.probabilities(features, labels), dtype=np.float64)
        selected = show_mask(np.clip(probs, 0.0, 1.0), costs)
        cut = (costs or EditCosts()).break_even
        seen = self.model.is_seen(labels)
        out = []
        for row, chosen in zip(probs, selected, strict=True):
            order = np.argsort(-row, kind="stable")
            out.append(ImageTags(tuple(Tag(labels[j], float(row[j]), seen[j], bool(chosen[j]), cut) for j in order)))
        return out

    def tag(
        self, images: Sequence[Image.Image], labels: Sequence[str], costs: EditCosts | None = None
    ) -> list[ImageTags]:
        """Ranked tags for PIL images (selected by the pre-annotation rule)."""
        return self.tag_features(self.features(images), labels, costs)
