"""LabelSet, targets, and the losses (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assistant.errors import LabelMappingError
from assistant.labels import LabelSet, targets_from_sets
from assistant.losses import l1_distillation, ranking_loss


def test_labelset_basics_and_fingerprint():
    labels = LabelSet(("cat", "dog", "snow"))
    assert labels.index("dog") == 1 and "snow" in labels and len(labels) == 3
    assert labels.fingerprint == LabelSet(("cat", "dog", "snow")).fingerprint
    assert labels.fingerprint != LabelSet(("dog", "cat", "snow")).fingerprint
    assert labels.union(["snow", "zebra"]).names == ("cat", "dog", "snow", "zebra")
    assert labels.mask(["snow"]).tolist() == [False, False, True]
    with pytest.raises(LabelMappingError, match="(?i)unknown label"):
        labels.index("zebra")


@pytest.mark.parametrize("names", [("a", "a"), ("",), (" a",)])
def test_labelset_refuses_bad_names(names):
    with pytest.raises(LabelMappingError):
        LabelSet(names)


def test_labelset_fingerprint_matches_worker_contract():
    from state.contracts import vocabulary_fingerprint

    names = ["cat", "traffic light", "ünïcode"]
    assert LabelSet(tuple(names)).fingerprint == vocabulary_fingerprint(names)


def test_targets_from_sets():
    labels = LabelSet(("a", "b", "c"))
    closed = targets_from_sets(labels, [{"a"}, {"c", "zzz"}])
    assert closed.tolist() == [[1, -1, -1], [-1, -1, 1]]
    open_world = targets_from_sets(labels, [{"a"}, set()], negatives=[{"b"}, {"c"}], default=0)
    assert open_world.tolist() == [[1, -1, 0], [0, 0, -1]]


def test_ranking_loss_hand_computed():
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.0]])
    targets = torch.tensor([[1, -1, -1, 0]])
    # pairs: (0,1): h = 1 + 0.2 - 0.9 = 0.3 ; (0,2): h = 1 + 0.5 - 0.9 = 0.6 ; both active.
    assert ranking_loss(scores, targets).item() == pytest.approx((0.3 + 0.6) / 2, abs=1e-6)
    # margin 0.5: (0,1) inactive (h = -0.2 -> 0), (0,2) h = 0.1; divided by one active pair.
    assert ranking_loss(scores, targets, margin=0.5).item() == pytest.approx(0.1, abs=1e-6)


def test_ranking_loss_ignores_unknown_entries_and_pairless_images():
    scores = torch.tensor([[0.9, 0.2, 5.0], [0.1, 0.3, 0.2]], requires_grad=True)
    targets = torch.tensor([[1, -1, 0], [1, 0, 0]])  # image 1 has no negative: no pair
    loss = ranking_loss(scores, targets)
    assert loss.item() == pytest.approx(0.3, abs=1e-6)
    loss.backward()
    assert scores.grad is not None and scores.grad[0, 2] == 0 and scores.grad[1].abs().sum() == 0
    empty = ranking_loss(scores, torch.zeros_like(targets))
    assert empty.item() == 0.0 and empty.requires_grad


def test_ranking_loss_chunking_is_exact(monkeypatch):
    torch.manual_seed(0)
    scores = torch.randn(9, 12)
    targets = torch.from_numpy(np.random.default_rng(0).choice([-1, 0, 1], size=(9, 12)))
    full = ranking_loss(scores, targets)
    monkeypatch.setattr("assistant.losses._PAIR_ELEMENTS", 200)
    assert ranking_loss(scores, targets).item() == pytest.approx(full.item(), rel=1e-6)


def test_distillation():
    assert l1_distillation(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.0)
