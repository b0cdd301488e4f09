"""Annotator corrections as training targets, and the deterministic train / validation / held-out split.

Both the fine-tuning rounds on Label Studio annotations (``workers.round_data``) and the offline
simulated annotator (``benchworld.simulation``) turn what an annotator did into a target row
through :func:`correction_targets`, so the two follow one rule.

**The target rule** for one annotated image and one vocabulary label (ML-ZSL encoding):

====================================================  =====  =====================================
the label ...                                         value  why
====================================================  =====  =====================================
was chosen by the annotator                           +1     a positive
was predicted (pre-annotated) and removed             -1     a *hard* negative: the model was
                                                             wrong there, with confidence
was an option when the annotation was made, and was   -1     closed world over the options shown:
not chosen                                                   a multi-choice control lists every
                                                             option, so leaving one unticked
                                                             says it is absent
was added to the config after the annotation          0      unknown: the annotator never
                                                             considered it
====================================================  =====  =====================================

"An option when the annotation was made" is :attr:`AnnotatedImage.shown`. Label Studio does not
record config history, so the rounds keep their own (``workers.round_data``): a label's first
sighting is the first round that saw it in the config, which is never earlier than its real
addition. An annotation made between the real addition and that sighting therefore gets 0 (never
a wrong -1) for the label: the rule errs towards "unknown".

**The split** (:func:`assign_split`) hashes a stable key of the image (the Label Studio task id)
with a per-project salt: a fixed fraction goes to the held-out evaluation set, a fixed fraction
of the rest to the validation set (model selection inside training), everything else to
training. An image never changes side as the project grows, so the held-out set only grows and
is never trained on. Changing the fractions moves images between sides: don't, on a live project.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from assistant.errors import ConfigError
from assistant.labels import NEGATIVE, POSITIVE, UNKNOWN, LabelSet

__all__ = ["AnnotatedImage", "SplitName", "assign_split", "correction_targets", "counts", "split_fraction"]

SplitName = Literal["train", "val", "heldout"]


@dataclass(frozen=True)
class AnnotatedImage:
    """What one annotator said about one image.

    Attributes:
        key: Stable id of the image for the split (a Label Studio task id as text).
        item: Identity of the image content for manifests and the feature cache (a content hash
            or a file path); defaults to ``key``.
        positives: Model labels the annotator chose.
        hard_negatives: Model labels that were pre-annotated and removed.
        shown: Model labels that were options in the config when the annotation was made.
        annotation_id: The annotation (for reports); None in simulations.
    """

    key: str
    positives: frozenset[str]
    hard_negatives: frozenset[str] = frozenset()
    shown: frozenset[str] = frozenset()
    item: str = ""
    annotation_id: int | None = None

    @property
    def identity(self) -> str:
        """:attr:`item`, or :attr:`key` when no item is given."""
        return self.item or self.key


def correction_targets(labels: LabelSet, images: Sequence[AnnotatedImage]) -> NDArray[np.int8]:
    """The ``(images, labels)`` target matrix of annotated images, by the rule in the module docstring.

    Args:
        labels: The columns (the current vocabulary).
        images: The annotations.

    Returns:
        int8 targets in {+1, -1, 0}.
    """
    out = np.full((len(images), len(labels)), UNKNOWN, dtype=np.int8)
    for row, image in enumerate(images):
        for name in image.shown | image.hard_negatives:
            if name in labels:
                out[row, labels.index(name)] = NEGATIVE
        # Positives last: a label both chosen and "removed" (an edit history) is what was kept.
        for name in image.positives:
            if name in labels:
                out[row, labels.index(name)] = POSITIVE
    return out


def split_fraction(salt: str, key: str) -> float:
    """A uniform number in [0, 1) that depends only on ``(salt, key)`` (SHA-256, 52 bits)."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(keys: Iterable[str], *, salt: str, heldout_fraction: float, val_fraction: float) -> list[SplitName]:
    """Which split each image belongs to (deterministic per key; see the module docstring).

    Args:
        keys: Stable image keys (Label Studio task ids as text).
        salt: Per-project salt (e.g. ``"project-3"``), so projects split independently.
        heldout_fraction: Share of images held out for evaluation, in (0, 1).
        val_fraction: Share of images used for model selection inside training, in [0, 1).

    Returns:
        ``"train"``, ``"val"`` or ``"heldout"`` per key.

    Raises:
        ConfigError: The fractions are out of range or leave nothing to train on.
    """
    if not 0.0 < heldout_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 or heldout_fraction + val_fraction >= 1.0:
        raise ConfigError(
            f"invalid split fractions: held-out {heldout_fraction}, validation {val_fraction}",
            why="the held-out share must be in (0, 1), the validation share in [0, 1), and they must leave "
            "images to train on",
            fix="use e.g. heldout_fraction=0.2, val_fraction=0.1",
        )
    out: list[SplitName] = []
    for key in keys:
        u = split_fraction(salt, key)
        # One draw decides both: [0, h) held out, [h, h + v) validation, the rest training.
        out.append("heldout" if u < heldout_fraction else "val" if u < heldout_fraction + val_fraction else "train")
    return out


def counts(targets: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positives and negatives per column of a target matrix."""
    t = np.asarray(targets)
    return (t == POSITIVE).sum(axis=0).astype(np.int64), (t == NEGATIVE).sum(axis=0).astype(np.int64)
