"""Multi-label losses over +1 / -1 / 0 targets, in a small registry.

- ``rank`` (default): the ranking loss of LESA/BiAM/MKT (mkt-method.md §4). For image i and every
  pair (p, n) with y_p = +1 and y_n = -1, ``h = max(0, margin + s_n - s_p)``;
  ``L_i = Σh / (#pairs with h > 0 + 1e-8)``; the loss is the mean over images with at least one
  pair. At MKT's normalised score scale every pair stays active, so it behaves as
  ``margin + mean(s_neg) - mean(s_pos)`` (§11.9).
- ``bce``: binary cross-entropy on the +1/-1 entries (0 ignored), with a temperature; an
  alternative for calibrated-mode scores.

Distillation (stage 1): :func:`l1_distillation`, the mean absolute difference between the
student's and the frozen teacher's global image embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import torch
import torch.nn.functional as F

from assistant.errors import ConfigError

__all__ = ["bce_loss", "create_loss", "l1_distillation", "list_losses", "ranking_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Images per chunk when materialising the (B, C, C) pair tensor: 925 labels x 8 images = 6.8M pairs.
_PAIR_ELEMENTS = 8 * 1024 * 1024


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The MKT ranking loss.

    Args:
        scores: ``(B, C)`` scores.
        targets: ``(B, C)`` in {+1, -1, 0}; 0 entries take part in no pair.
        margin: The hinge margin (1 in MKT).

    Returns:
        A scalar; zero (with a gradient path) when no image has a positive-negative pair.
    """
    pos = (targets > 0).to(scores.dtype)
    neg = (targets < 0).to(scores.dtype)
    batch, n_labels = scores.shape
    chunk = max(1, _PAIR_ELEMENTS // max(1, n_labels * n_labels))
    per_image = []
    for start in range(0, batch, chunk):
        s = scores[start : start + chunk]
        # hinge[b, p, n] = margin + s_n - s_p, kept only where p is positive and n negative.
        hinge = F.relu(margin + s[:, None, :] - s[:, :, None])
        mask = pos[start : start + chunk, :, None] * neg[start : start + chunk, None, :]
        hinge = hinge * mask
        active = ((hinge > 0) & (mask > 0)).sum(dim=(1, 2)).to(scores.dtype)
        per_image.append(hinge.sum(dim=(1, 2)) / (active + 1e-8))
    losses = torch.cat(per_image)
    has_pair = (pos.sum(1) > 0) & (neg.sum(1) > 0)
    if not bool(has_pair.any()):
        return scores.sum() * 0.0
    return losses[has_pair].mean()


def bce_loss(scores: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Binary cross-entropy on the known (+1/-1) entries of ``scores / temperature``."""
    known = targets != 0
    if not bool(known.any()):
        return scores.sum() * 0.0
    logits = scores[known] / temperature
    return F.binary_cross_entropy_with_logits(logits, (targets[known] > 0).to(scores.dtype))


def l1_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over the embedding dimensions (and the batch)."""
    return (student - teacher.detach()).abs().mean()


_LOSSES: MappingProxyType[str, LossFn] = MappingProxyType({"rank": ranking_loss, "bce": bce_loss})


def list_losses() -> list[str]:
    """Registered multi-label losses."""
    return sorted(_LOSSES)


def create_loss(name: str) -> LossFn:
    """A loss by name; an unknown name lists the valid ones."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss '{name}'", fix="use one of: " + ", ".join(list_losses())) from None
