"""The one entry point that builds vision-language models: ``BackboneSpec`` and ``create_backbone``.

Examples:
    >>> spec = BackboneSpec.parse("ViT-B-16:laion2b_s34b_b88k")     # doctest: +SKIP
    >>> backbone = create_backbone(spec)                            # doctest: +SKIP
    >>> create_backbone("local-dir:assets/world-tiny")              # doctest: +SKIP
    >>> create_backbone("hf:/models/clip-vit-base-patch16")          # doctest: +SKIP
    >>> create_backbone("test-tiny", allow_random=True)              # doctest: +SKIP

What a spec can name is the backbone registry's (:mod:`assistant.backbones.registry`): each kind
has a scheme (``hf:``, ``local-dir:``, none for ``NAME[:TAG]``), a builder and its weight files,
so this module never switches on a kind's name.

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
from dataclasses import dataclass
from pathlib import Path

import torch

from assistant.backbone import Backbone
from assistant.backbones.open_clip_backbone import MODEL_CONFIGS_DIR, list_model_configs, register_model_config
from assistant.backbones.registry import BackboneKind, backbone_kind, default_kind, kind_for_directory, kind_for_scheme
from assistant.devices import resolve_device
from assistant.errors import ConfigError, ModelLoadError

__all__ = [
    "MODEL_CONFIGS_DIR",
    "BackboneSpec",
    "create_backbone",
    "list_model_configs",
    "register_model_config",
    "weights_digest",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """What to build.

    Attributes:
        kind: A registered backbone kind (``assistant.backbones.list_backbone_kinds()``):
            ``open_clip`` (an architecture name, with a pretrained tag or weights file),
            ``open_clip_dir`` (an open_clip model directory: ``open_clip_config.json`` + weights),
            ``hf`` (a Hugging Face CLIP model directory).
        name: Architecture name, or the directory for the directory kinds.
        pretrained: Pretrained tag or local weights file (the default kind only); None = no weights.
    """

    kind: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        """Parse ``SCHEME:REST`` (``hf:DIR``, ``local-dir:DIR``), a model ``DIR``, or ``NAME[:TAG]``."""
        text = text.strip()
        if not text:
            raise ConfigError("the model spec is empty", fix="pass e.g. 'ViT-B-16:laion2b_s34b_b88k' or a directory")
        scheme, sep, rest = text.partition(":")
        kind = kind_for_scheme(scheme) if sep else None
        if kind is not None:
            return cls(kind.name, rest)
        if Path(text).is_dir():
            found = kind_for_directory(Path(text))
            if found is None:
                raise ConfigError(
                    f"the model directory {text} holds none of the files that say what it is",
                    why="looked for " + ", ".join(_markers()),
                    fix="point at an open_clip model directory, or prefix a Hugging Face CLIP directory with 'hf:'",
                )
            return cls(found.name, text)
        name, sep, pretrained = text.partition(":")
        return cls(default_kind().name, name, pretrained if sep else None)

    @property
    def backbone_kind(self) -> BackboneKind:
        """The registered kind (raises ``ConfigError`` for an unknown one)."""
        return backbone_kind(self.kind)

    def __str__(self) -> str:
        scheme = self.backbone_kind.scheme
        if scheme is not None:
            return f"{scheme}:{self.name}"
        return self.name if self.pretrained is None else f"{self.name}:{self.pretrained}"

    @property
    def has_weights(self) -> bool:
        """Whether the spec names real weights (a model directory, or a name with a tag or file)."""
        return self.backbone_kind.directory or self.pretrained is not None


def _markers() -> list[str]:
    from assistant.backbones.registry import BACKBONE_KINDS

    return [k.directory_marker for k in BACKBONE_KINDS.values() if k.directory_marker]


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
