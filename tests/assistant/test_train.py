"""Training stages: each reduces its loss on a small fixed batch, deterministically."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from assistant import train as train_module
from assistant.checkpoint import load_model
from assistant.config import HeadConfig, Stage1Config, Stage2Config
from assistant.data import ArrayImageDataset
from assistant.devices import autocast_for
from assistant.errors import DataError
from assistant.head import two_stream_scores
from assistant.labels import LabelSet
from assistant.losses import ranking_loss
from assistant.train import encode_dataset, train_stage1, train_stage2
from tests.helpers import colour_world

LABELS = LabelSet(tuple(f"tag{c}" for c in range(6)))


def _data(n: int = 48) -> ArrayImageDataset:
    images, targets = colour_world(n, len(LABELS), seed=1)
    return ArrayImageDataset(images, targets)


def _batch_loss(model, data) -> float:
    feats, targets = encode_dataset(model, data)
    emb = model.label_embeddings(list(LABELS), use_cache=False)
    scores = two_stream_scores(feats, emb, HeadConfig(mode="mkt")).fused
    return float(ranking_loss(scores, targets).item())


def test_stage1_reduces_loss_and_trains_only_the_top(tiny_loaded):
    model, data = tiny_loaded.model, _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = _batch_loss(model, data)
    history = train_stage1(
        model, data, LABELS, Stage1Config(epochs=6, batch_size=16, warmup_epochs=1, augment=False, distill_weight=0.1)
    )
    assert _batch_loss(model, data) < loss0 - 0.005
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(history.tuned_parameters)
    # Last block (1 of 2 trainable in a 2-block tower), ln_post and proj; never the text side.
    assert any(".resblocks.1." in k for k in changed) and any("proj" in k for k in changed)
    assert not any("transformer.resblocks" in k and "visual" not in k for k in changed)
    assert set(LABELS) <= set(model.seen_labels)


def test_stage2_reduces_loss_and_trains_only_the_prompt(tiny_loaded):
    model, data = tiny_loaded.model, _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = _batch_loss(model, data)
    train_stage2(model, data, LABELS, Stage2Config(epochs=8, batch_size=16, lr=5e-3))
    assert _batch_loss(model, data) < loss0 - 0.005
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"prompt_learner.ctx"}


def test_training_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        loaded = load_model("test-tiny", allow_random=True)
        h = train_stage1(loaded.model, _data(32), LABELS, Stage1Config(epochs=2, batch_size=8, max_steps=5))
        runs.append((h.epoch_losses, loaded.model.state_dict()["backbone.model.visual.proj"].clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_validation_keeps_the_best_epoch(tiny_loaded):
    model = tiny_loaded.model
    scores = iter([0.5, 0.9, 0.1])
    snapshots = []

    def val_fn(m):
        snapshots.append(m.prompt_learner.ctx.detach().clone())
        return next(scores)

    history = train_stage2(model, _data(), LABELS, Stage2Config(epochs=3, batch_size=16, lr=1e-2), val_fn=val_fn)
    assert history.best_epoch == 1 and history.val_scores == [0.5, 0.9, 0.1]
    torch.testing.assert_close(model.prompt_learner.ctx, snapshots[1])


def test_unusable_training_data_is_a_clear_error(tiny_loaded):
    images, _ = colour_world(8, len(LABELS))
    no_negatives = ArrayImageDataset(images, np.ones((8, len(LABELS)), dtype=np.int8))
    with pytest.raises(DataError, match="(?i)both a positive and a negative"):
        train_stage1(tiny_loaded.model, no_negatives, LABELS, Stage1Config(epochs=1))
    with pytest.raises(DataError, match="(?i)columns"):
        train_stage2(tiny_loaded.model, _data(), LabelSet(("a",)), Stage2Config(epochs=1))


def test_stage1_leaves_the_callers_teacher_as_it_was(tiny_loaded):
    """Issue 16 (6e): the teacher is the caller's module; training must not freeze or switch it."""
    model = tiny_loaded.model
    teacher = copy.deepcopy(model.backbone).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train_stage1(model, _data(32), LABELS, Stage1Config(epochs=1, batch_size=8, max_steps=3), teacher=teacher)
    assert all(m.training for m in teacher.modules())
    assert all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_stage1_restores_the_teachers_modes_when_training_fails(tiny_loaded):
    teacher = copy.deepcopy(tiny_loaded.model.backbone).train()

    def fail(step, total, figures):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train_stage1(
            tiny_loaded.model, _data(32), LABELS, Stage1Config(epochs=1, batch_size=8), teacher=teacher, progress=fail
        )
    assert all(m.training for m in teacher.modules())


def test_stage2_encodes_its_dataset_under_cpu_bf16_when_asked(tiny_loaded, monkeypatch):
    """Issue 16 (6e): ``cpu_bf16`` also covers the image pass stage 2 makes itself."""
    seen: list[bool] = []

    def spy(device, cpu_bf16=False):
        seen.append(cpu_bf16)
        return autocast_for(device, cpu_bf16)

    monkeypatch.setattr(train_module, "autocast_for", spy)
    train_stage2(tiny_loaded.model, _data(16), LABELS, Stage2Config(epochs=1, batch_size=8, max_steps=1, cpu_bf16=True))
    assert seen and all(seen)
