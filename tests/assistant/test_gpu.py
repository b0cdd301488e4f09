"""The CUDA path: tagging and both training stages on a GPU, autocast and grad scaling included.

Marked ``gpu``: skipped with the reason where CUDA is absent (tests/conftest.py). To check the
test logic itself on a CPU-only machine: ``ASSISTANT_TEST_GPU=1 ASSISTANT_TEST_DEVICE=cpu pytest
tests/assistant/test_gpu.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from assistant.config import HeadConfig, Stage1Config, Stage2Config
from assistant.data import ArrayImageDataset
from assistant.head import two_stream_scores
from assistant.inference import Tagger
from assistant.labels import LabelSet
from assistant.losses import ranking_loss
from assistant.train import encode_dataset, train_stage1, train_stage2
from tests.helpers import colour_world

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("ASSISTANT_TEST_DEVICE", "cuda")
LABELS = LabelSet(("red", "green", "blue", "stripes"))


def _loss(model, data: ArrayImageDataset) -> float:
    with torch.no_grad():
        feats, targets = encode_dataset(model, data)
        emb = model.label_embeddings(list(LABELS), use_cache=False).float().cpu()
        scores = two_stream_scores(feats.to("cpu", torch.float32), emb, HeadConfig(mode="mkt")).fused
        return float(ranking_loss(scores, targets.cpu()).item())


def test_tagging_on_the_gpu_agrees_with_the_cpu(tiny_loaded) -> None:
    images = [Image.fromarray(a) for a in colour_world(6, len(LABELS), seed=3)[0]]
    cpu = Tagger(tiny_loaded, device="cpu")
    expected = cpu.probabilities(cpu.features(images), list(LABELS))
    gpu = Tagger(tiny_loaded, device=DEVICE)  # moves the model
    assert gpu.model.device.type == torch.device(DEVICE).type
    got = gpu.probabilities(gpu.features(images), list(LABELS))
    # Autocast runs the towers in half precision on CUDA: agreement to a few hundredths.
    np.testing.assert_allclose(got, expected, atol=3e-2)
    tags = gpu.tag(images, list(LABELS))
    assert len(tags) == len(images) and all(len(t.tags) == len(LABELS) for t in tags)


def test_both_training_stages_learn_on_the_gpu(tiny_loaded) -> None:
    model = tiny_loaded.model.to(DEVICE)
    images, targets = colour_world(48, len(LABELS), seed=1)
    data = ArrayImageDataset(images, targets)
    before = _loss(model, data)
    train_stage1(
        model, data, LABELS, Stage1Config(epochs=6, batch_size=16, warmup_epochs=1, augment=False, distill_weight=0.1)
    )
    after_stage1 = _loss(model, data)
    assert after_stage1 < before - 0.005
    ctx = model.prompt_learner.ctx.detach().clone()
    train_stage2(model, data, LABELS, Stage2Config(epochs=8, batch_size=16, lr=5e-3))
    assert not torch.equal(model.prompt_learner.ctx.detach(), ctx)
    assert np.isfinite(_loss(model, data))
    assert {p.device.type for p in model.parameters()} == {torch.device(DEVICE).type}
