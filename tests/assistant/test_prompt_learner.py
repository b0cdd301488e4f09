"""Prompt tuning: the learner reproduces the template at init and only its context trains."""

from __future__ import annotations

import pytest
import torch

from assistant.config import PromptConfig
from assistant.errors import ConfigError
from assistant.prompt_learner import PromptLearner

LABELS = ["cat", "traffic light", "hair drier", "snow"]


@pytest.mark.parametrize("tuning", ["coop", "template", "none"])
@pytest.mark.parametrize("template", ["There is a {} in the scene.", "a photo of a {}.", "{}"])
def test_initial_prompt_equals_plain_template_encoding(tiny_loaded, tuning, template):
    backbone = tiny_loaded.model.backbone
    learner = PromptLearner(backbone, PromptConfig(template=template, tuning=tuning))
    reference = backbone.encode_text(backbone.tokenize([template.format(x) for x in LABELS]))
    torch.testing.assert_close(learner(LABELS), reference, atol=1e-5, rtol=1e-5)


def test_template_mode_ties_repeated_words(tiny_loaded):
    backbone = tiny_loaded.model.backbone
    coop = PromptLearner(backbone, PromptConfig(template="a photo of a {}.", tuning="coop"))
    tied = PromptLearner(backbone, PromptConfig(template="a photo of a {}.", tuning="template"))
    assert coop.ctx.shape[0] == 5  # a, photo, of, a, .
    assert tied.ctx.shape[0] == 4  # "a" is one shared row


def test_gradients_reach_only_the_context(tiny_loaded):
    backbone = tiny_loaded.model.backbone
    learner = PromptLearner(backbone, PromptConfig(tuning="coop"))
    backbone.requires_grad_(False)
    learner(LABELS).pow(2).sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert learner.sot_eot.grad is None  # tune_sot_eot is off by default
    assert backbone.token_embedding.weight.grad is None


def test_tuned_context_changes_novel_label_embeddings(tiny_loaded):
    backbone = tiny_loaded.model.backbone
    learner = PromptLearner(backbone, PromptConfig(tuning="coop"))
    before = learner(["zebra"]).detach()
    with torch.no_grad():
        learner.ctx.add_(0.5)
    assert not torch.allclose(learner(["zebra"]), before)


def test_long_labels_are_truncated_to_the_context(tiny_loaded):
    backbone = tiny_loaded.model.backbone
    learner = PromptLearner(backbone, PromptConfig())
    out = learner([" ".join(["word"] * 100)])
    assert out.shape == (1, backbone.embed_dim) and torch.isfinite(out).all()


def test_template_needs_one_placeholder():
    with pytest.raises(ConfigError):
        PromptConfig(template="no placeholder")
