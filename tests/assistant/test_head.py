"""The two-stream head: top-k local stream, normalisation modes, chunking."""

from __future__ import annotations

import pytest
import torch

from assistant.backbone import ImageFeatures
from assistant.config import HeadConfig
from assistant.errors import ConfigError
from assistant.head import local_topk_scores, two_stream_scores


def test_local_stream_picks_each_labels_own_patches():
    # 1 image, 6 patches in 3-d space; label 0 lives in patches 1 and 4, label 1 in patch 5.
    patches = torch.zeros(1, 6, 3)
    patches[0, 1] = torch.tensor([1.0, 0.0, 0.0])
    patches[0, 4] = torch.tensor([0.8, 0.0, 0.0])
    patches[0, 5] = torch.tensor([0.0, 1.0, 0.0])
    patches[0, 0] = torch.tensor([0.0, 0.0, 0.3])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    scores = local_topk_scores(patches, labels, k=2)
    # label 0: mean of its two best patches (1.0, 0.8); label 1: mean of (1.0, 0.0).
    torch.testing.assert_close(scores, torch.tensor([[0.9, 0.5]]))
    # k larger than the number of patches is clamped to all patches.
    torch.testing.assert_close(local_topk_scores(patches, labels, k=100), patches.mean(1) @ labels.T)


def test_small_object_wins_in_local_not_global_stream():
    # A small object (one patch of 16) barely moves the mean, but the top-1 patch finds it.
    patches = torch.randn(1, 16, 8) * 0.01
    target = torch.zeros(8)
    target[3] = 1.0
    patches[0, 7] = target
    feats = ImageFeatures(patches.mean(1), patches)
    labels = torch.stack([target, torch.eye(8)[5]])
    out = two_stream_scores(feats, labels, HeadConfig(topk=1, mode="cosine"))
    assert out.local_scores is not None
    assert out.local_scores[0, 0] > 0.9 > out.local_scores[0, 1]


def test_mkt_mode_normalises_each_stream_over_labels():
    torch.manual_seed(0)
    feats = ImageFeatures(torch.randn(4, 8), torch.randn(4, 5, 8))
    labels = torch.randn(7, 8)
    out = two_stream_scores(feats, labels, HeadConfig(topk=2, mode="mkt"))
    glob = out.global_scores / out.global_scores.norm(dim=1, keepdim=True)
    local = out.local_scores / out.local_scores.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out.fused, (glob + local) / 2)
    torch.testing.assert_close(out.global_scores, feats.global_emb @ labels.T)


def test_cosine_mode_is_vocabulary_independent_and_mkt_mode_is_not():
    torch.manual_seed(1)
    feats = ImageFeatures(torch.randn(3, 8), torch.randn(3, 5, 8))
    labels = torch.randn(4, 8)
    extra = torch.cat([labels, torch.randn(1, 8)])
    for mode, independent in (("cosine", True), ("mkt", False)):
        cfg = HeadConfig(topk=2, mode=mode)
        a = two_stream_scores(feats, labels, cfg).fused
        b = two_stream_scores(feats, extra, cfg).fused[:, :4]
        assert torch.allclose(a, b, atol=1e-6) is independent


def test_global_only_without_patches_and_weights():
    feats = ImageFeatures(torch.randn(2, 8), None)
    labels = torch.randn(3, 8)
    out = two_stream_scores(feats, labels, HeadConfig(mode="cosine"))
    assert out.local_scores is None
    torch.testing.assert_close(out.fused, out.global_scores)
    weighted = two_stream_scores(
        ImageFeatures(feats.global_emb, torch.randn(2, 4, 8)), labels, HeadConfig(global_weight=1, local_weight=0)
    )
    assert weighted.local_scores is None


def test_chunked_local_stream_equals_one_shot(monkeypatch):
    torch.manual_seed(2)
    patches, labels = torch.randn(3, 10, 8), torch.randn(50, 8)
    full = local_topk_scores(patches, labels, 3)
    monkeypatch.setattr("assistant.head._MAX_SIM_ELEMENTS", 64)  # forces 2 labels per chunk
    torch.testing.assert_close(local_topk_scores(patches, labels, 3), full)


@pytest.mark.parametrize("kwargs", [{"topk": 0}, {"global_weight": -1}, {"global_weight": 0, "local_weight": 0}])
def test_invalid_head_config(kwargs):
    with pytest.raises(ConfigError):
        HeadConfig(**kwargs)
