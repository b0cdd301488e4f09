"""The built-in backbone kinds: open_clip names, open_clip model directories, Hugging Face CLIP directories.

Registered into :mod:`assistant.backbones.registry` when :mod:`assistant.backbones` is imported.
Each builder imports its library (and torch) only when it is called, so listing the kinds stays
light. A new kind is a :class:`~assistant.backbone.Backbone` subclass with a ``build_*(spec)``
function in its own module under ``assistant/backbones/``, plus one ``register_backbone_kind``
call here (docs/developing.md, "Add a backbone").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assistant.backbones.registry import BackboneKind, register_backbone_kind

if TYPE_CHECKING:
    from assistant.backbone import Backbone
    from assistant.backbones.registry import BackboneSpec

__all__ = ["OPEN_CLIP_WEIGHT_FILES"]

#: The weight files of an open_clip model directory, in the order they are looked for.
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _build_open_clip(spec: BackboneSpec) -> Backbone:
    from assistant.backbones.open_clip_backbone import build_open_clip

    return build_open_clip(spec)


def _build_hf(spec: BackboneSpec) -> Backbone:
    from assistant.backbones.hf_backbone import build_hf_clip

    return build_hf_clip(spec)


def _open_clip_weights(spec: BackboneSpec) -> list[Path]:
    return [Path(spec.pretrained)] if spec.pretrained else []


def _open_clip_dir_weights(spec: BackboneSpec) -> list[Path]:
    directory = Path(spec.name)
    return [directory / f for f in OPEN_CLIP_WEIGHT_FILES if (directory / f).is_file()][:1]


def _hf_weights(spec: BackboneSpec) -> list[Path]:
    return sorted(Path(spec.name).glob("*.safetensors"))  # the only weights a Hugging Face directory is loaded from


register_backbone_kind(
    BackboneKind(
        name="open_clip",
        scheme=None,
        summary="an open_clip architecture with a pretrained tag or a local weights file",
        example="ViT-B-16:laion2b_s34b_b88k",
        build=_build_open_clip,
        weight_files=_open_clip_weights,
    )
)
register_backbone_kind(
    BackboneKind(
        name="open_clip_dir",
        scheme="local-dir",
        summary="an open_clip model directory (open_clip_config.json + weights); a plain DIR works too",
        example="local-dir:assets/world-tiny",
        build=_build_open_clip,
        weight_files=_open_clip_dir_weights,
        directory=True,
        directory_marker="open_clip_config.json",
    )
)
register_backbone_kind(
    BackboneKind(
        name="hf",
        scheme="hf",
        summary="a Hugging Face CLIP directory (config.json, model.safetensors, tokenizer files)",
        example="hf:/models/clip-vit-base-patch16",
        build=_build_hf,
        weight_files=_hf_weights,
        directory=True,
        directory_marker="config.json",
    )
)
