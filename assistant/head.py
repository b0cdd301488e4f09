"""The two-stream MKT head: a global stream (class token) and a local stream (top-k patches).

For labels ``T`` (C x D), the global embedding ``g`` (B x D) and projected patches ``P``
(B x N x D) (docs/method.md §2.2):

- global: ``g Tᵀ``;
- local: for each label, the mean of its ``k`` highest patch scores ``(P Tᵀ)[:, :, c]``, so each
  label picks its own patches (small objects cover a few patches only);
- ``mkt`` mode: each stream is L2-normalised over the label axis per image, then the two are
  combined with the configured weights (MKT averages them). No temperature, no feature
  normalisation: this is not cosine similarity and it depends on the vocabulary.
- ``cosine`` mode: features and labels are L2-normalised first, so every score is a
  vocabulary-independent cosine; calibration and thresholds are fitted on this mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from assistant.backbone import ImageFeatures
from assistant.config import HeadConfig

__all__ = ["HeadScores", "local_topk_scores", "two_stream_scores"]

# Bound on B x N x C similarity entries materialised at once (16M floats = 64 MB): a 10,000-label
# vocabulary at batch 32 with 196 patches would otherwise take 250 MB.
_MAX_SIM_ELEMENTS = 16 * 1024 * 1024
_EPS = 1e-8


@dataclass(frozen=True)
class HeadScores:
    """Per-image, per-label scores of each stream and their combination, all ``(B, C)``."""

    global_scores: torch.Tensor
    local_scores: torch.Tensor | None
    fused: torch.Tensor


def local_topk_scores(
    patches: torch.Tensor, labels: torch.Tensor, k: int, patch_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of the top-``k`` patch-to-label similarities, per image and label.

    Args:
        patches: ``(B, N, D)`` patch embeddings.
        labels: ``(C, D)`` label embeddings.
        k: Patches kept per label (clamped to N).
        patch_norms: ``(B, N, 1)`` divisors of the similarities (cosine scores of patches that
            were not normalised), or None.

    Returns:
        ``(B, C)`` scores.
    """
    batch, n_patches, _ = patches.shape
    k = min(k, n_patches)
    chunk = max(1, _MAX_SIM_ELEMENTS // max(1, batch * n_patches))
    outs = []
    for start in range(0, labels.shape[0], chunk):
        sim = torch.einsum("bnd,cd->bnc", patches, labels[start : start + chunk])
        if patch_norms is not None:
            sim = sim / patch_norms
        outs.append(sim.topk(k, dim=1).values.mean(dim=1))
    return torch.cat(outs, dim=1)


def two_stream_scores(features: ImageFeatures, labels: torch.Tensor, config: HeadConfig) -> HeadScores:
    """Score images against labels with the two-stream head.

    Args:
        features: Projected image features (global embedding and patch tokens).
        labels: ``(C, D)`` label embeddings (not normalised; ``cosine`` mode normalises them).
        config: Stream weights, top-k and score mode.

    Returns:
        The scores of each stream and the fused score. Without patch tokens (convolutional
        towers) the fused score is the global stream alone.
    """
    glob_emb, patches = features.global_emb, features.patches
    labels = labels.to(glob_emb.dtype)
    patch_norms = None
    if config.mode == "cosine":
        glob_emb = F.normalize(glob_emb, dim=-1)
        labels = F.normalize(labels, dim=-1)
        if patches is not None and labels.shape[0] < patches.shape[-1]:
            # Fewer labels than dimensions (re-tagging with a few new labels): dividing the
            # (B, N, C) similarities by the patch norms costs less than normalising the (B, N, D)
            # patches (half the scoring time of one label over cached ViT-B/32 features).
            patch_norms = patches.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        elif patches is not None:
            patches = F.normalize(patches, dim=-1)

    glob = glob_emb @ labels.T
    local = (
        None
        if patches is None or config.local_weight == 0
        else local_topk_scores(patches, labels, config.topk, patch_norms)
    )

    if config.mode == "mkt":
        # Per image, each stream's score vector is scaled to unit L2 norm over the label axis.
        glob_s = glob / glob.norm(dim=1, keepdim=True).clamp_min(_EPS)
        local_s = None if local is None else local / local.norm(dim=1, keepdim=True).clamp_min(_EPS)
    else:
        glob_s, local_s = glob, local

    if local_s is None:
        fused = glob_s
    else:
        total = config.global_weight + config.local_weight
        fused = (config.global_weight * glob_s + config.local_weight * local_s) / total
    return HeadScores(global_scores=glob, local_scores=local, fused=fused)
