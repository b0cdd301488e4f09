"""Multi-label losses over +1 / -1 / 0 targets.

- :func:`ranking_loss`: the ranking loss of LESA/BiAM/MKT (docs/method.md §4). For image i and every
  pair (p, n) with y_p = +1 and y_n = -1, ``h = max(0, margin + s_n - s_p)``;
  ``L_i = Σh / (#pairs with h > 0 + 1e-8)``; the loss is the mean over images with at least one
  pair. At MKT's normalised score scale every pair stays active, so it behaves as
  ``margin + mean(s_neg) - mean(s_pos)`` (docs/method.md §4).

Distillation (stage 1): :func:`l1_distillation`, the mean absolute difference between the
student's and the frozen teacher's global image embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["l1_distillation", "ranking_loss"]

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


def l1_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over the embedding dimensions (and the batch)."""
    return (student - teacher.detach()).abs().mean()
