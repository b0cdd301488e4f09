"""The pure model and data core of the labeling assistant.

MKT (multimodal knowledge transfer) on open_clip or Hugging Face CLIP backbones: the backbone
factory, the two-stream head, prompt tuning, the two training stages, checkpoints, calibrated
tagging, the ML-ZSL evaluation protocol, active-learning strategies and the offline benchmark
world. No Celery, HTTP, Label Studio or CLI code lives here.

The names below are loaded on first use, so importing a light submodule (``assistant.errors``,
``assistant.evaluate``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AssistantError",
    "BackboneSpec",
    "Calibrator",
    "HeadConfig",
    "LabelSet",
    "LoadedModel",
    "MKTModel",
    "PromptConfig",
    "Stage1Config",
    "Stage2Config",
    "Tagger",
    "create_backbone",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "train_stage1",
    "train_stage2",
]

_WHERE = {
    "AssistantError": "errors",
    "BackboneSpec": "assistant.factory",
    "Calibrator": "assistant.calibration",
    "HeadConfig": "assistant.config",
    "LabelSet": "assistant.labels",
    "LoadedModel": "assistant.checkpoint",
    "MKTModel": "assistant.model",
    "PromptConfig": "assistant.config",
    "Stage1Config": "assistant.config",
    "Stage2Config": "assistant.config",
    "Tagger": "assistant.inference",
    "create_backbone": "assistant.factory",
    "evaluate": "assistant.evaluate",
    "load_checkpoint": "assistant.checkpoint",
    "load_model": "assistant.checkpoint",
    "save_checkpoint": "assistant.checkpoint",
    "train_stage1": "assistant.train",
    "train_stage2": "assistant.train",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'assistant' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
