"""The one entry point that builds vision-language models: ``BackboneSpec`` and ``create_backbone``.

Examples:
    >>> spec = BackboneSpec.parse("ViT-B-16:laion2b_s34b_b88k")     # doctest: +SKIP
    >>> backbone = create_backbone(spec)                            # doctest: +SKIP
    >>> create_backbone("local-dir:assets/world-tiny")              # doctest: +SKIP
    >>> create_backbone("hf:/models/clip-vit-base-patch16")          # doctest: +SKIP
    >>> create_backbone("test-tiny", allow_random=True)              # doctest: +SKIP

What a spec can name is the backbone registry's (:mod:`assistant.backbones.registry`, the home of
``BackboneSpec``, re-exported here): each kind has a scheme (``hf:``, ``local-dir:``, none for
``NAME[:TAG]``), a builder and its weight files, so this module never switches on a kind's name.

A model that cannot load its weights is an error with the fix in its message, never a silently
random model: real weights are always loaded with open_clip's ``require_pretrained=True``, and a
spec without weights builds a random model only when ``allow_random=True`` (tests, pretraining).

No checkpoint is ever unpickled with code execution: open_clip weights load with
``weights_only=True`` (torch's restricted unpickler), Hugging Face directories only from
safetensors (a directory with nothing but ``pytorch_model.bin`` is refused), and MKT checkpoints
are safetensors (:mod:`assistant.checkpoint`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch

from assistant.backbone import Backbone
from assistant.backbones.open_clip_backbone import MODEL_CONFIGS_DIR, list_model_configs, register_model_config
from assistant.backbones.registry import BackboneSpec
from assistant.devices import resolve_device
from assistant.errors import ModelLoadError

__all__ = [
    "MODEL_CONFIGS_DIR",
    "BackboneSpec",
    "create_backbone",
    "list_model_configs",
    "register_model_config",
    "weights_digest",
]

logger = logging.getLogger(__name__)


def create_backbone(
    spec: BackboneSpec | str, *, device: str | torch.device = "cpu", allow_random: bool = False
) -> Backbone:
    """Build a backbone from a spec.

    Args:
        spec: A :class:`BackboneSpec` or its string form.
        device: Where to put the model (``auto`` picks CUDA when present).
        allow_random: Allow a bare architecture name (random weights). Only tests and
            pretraining ask for this.

    Returns:
        The backbone in eval mode, with ``spec`` and ``version`` set.

    Raises:
        ModelLoadError: The weights cannot be loaded; the message says how to fix it.
        ConfigError: The spec is malformed or names an unknown architecture.
    """
    spec = BackboneSpec.parse(spec) if isinstance(spec, str) else spec
    if not spec.has_weights and not allow_random:
        raise ModelLoadError(
            f"the model spec '{spec}' names an architecture without weights",
            why="a randomly initialised model would tag at random",
            fix=f"name pretrained weights: '{spec.name}:<pretrained tag>' or '{spec.name}:/path/to/weights.bin', "
            "or an open_clip model directory",
        )
    backbone = spec.backbone_kind.build(spec)
    backbone.spec = str(spec)
    backbone.version = _weights_version(spec)
    return backbone.to(resolve_device(device)).eval()


def _weights_version(spec: BackboneSpec) -> str:
    if not spec.has_weights:
        return f"random:{spec.name}"
    if spec.pretrained is not None and not Path(spec.pretrained).is_file():
        return f"{spec.name}:{spec.pretrained}"  # a pretrained tag: its name is its version
    files = spec.backbone_kind.weight_files(spec)
    if not files:
        return f"{spec.kind}:{spec.name}"
    return "sha256:" + weights_digest(files)


def weights_digest(files: list[Path]) -> str:
    """The first 16 hex digits of the SHA-256 of the given files' bytes, cached per (path, size, mtime)."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(_file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
