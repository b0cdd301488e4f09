"""The only place that builds vision-language models.

Examples:
    >>> spec = BackboneSpec.parse("ViT-B-16:laion2b_s34b_b88k")     # doctest: +SKIP
    >>> backbone = create_backbone(spec)                            # doctest: +SKIP
    >>> create_backbone("local-dir:assets/world-tiny")              # doctest: +SKIP
    >>> create_backbone("hf:/models/clip-vit-base-patch16")          # doctest: +SKIP
    >>> create_backbone("test-tiny", allow_random=True)              # doctest: +SKIP

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
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from assistant.backbone import Backbone
from assistant.devices import resolve_device
from assistant.errors import ConfigError, ModelLoadError

__all__ = ["BackboneSpec", "create_backbone", "list_model_configs", "register_model_config", "weights_digest"]

logger = logging.getLogger(__name__)

# The project's own architecture configs (tiny test models, the benchmark world model).
MODEL_CONFIGS_DIR = Path(__file__).with_name("model_configs")
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Weight files that are pickles: loaded only through torch's weights_only unpickler (open_clip), or
# not at all (Hugging Face directories must hold safetensors).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})

SpecKind = Literal["open_clip", "open_clip_dir", "hf"]


@dataclass(frozen=True)
class BackboneSpec:
    """What to build.

    Attributes:
        kind: ``open_clip`` (an architecture name, with a pretrained tag or weights file),
            ``open_clip_dir`` (an open_clip model directory: ``open_clip_config.json`` + weights),
            or ``hf`` (a Hugging Face CLIP model directory).
        name: Architecture name, or the directory for the two directory kinds.
        pretrained: Pretrained tag or local weights file (``open_clip`` only); None = no weights.
    """

    kind: SpecKind
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        """Parse ``NAME``, ``NAME:TAG``, ``NAME:/path/weights``, ``local-dir:DIR``, ``DIR`` or ``hf:DIR``."""
        text = text.strip()
        if not text:
            raise ConfigError("the model spec is empty", fix="pass e.g. 'ViT-B-16:laion2b_s34b_b88k' or a directory")
        if text.startswith("hf:"):
            return cls("hf", text[3:])
        if text.startswith("local-dir:"):
            return cls("open_clip_dir", text[len("local-dir:") :])
        if Path(text).is_dir():
            if (Path(text) / "open_clip_config.json").is_file():
                return cls("open_clip_dir", text)
            if (Path(text) / "config.json").is_file():
                return cls("hf", text)
            raise ConfigError(
                f"the model directory {text} holds neither open_clip_config.json nor config.json",
                fix="point at an open_clip model directory, or prefix a Hugging Face CLIP directory with 'hf:'",
            )
        name, sep, pretrained = text.partition(":")
        return cls("open_clip", name, pretrained if sep else None)

    def __str__(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.name}"
        if self.kind == "open_clip_dir":
            return f"local-dir:{self.name}"
        return self.name if self.pretrained is None else f"{self.name}:{self.pretrained}"

    @property
    def has_weights(self) -> bool:
        """Whether the spec names real weights (everything but a bare architecture name)."""
        return self.kind != "open_clip" or self.pretrained is not None


def register_model_config(path: str | Path) -> None:
    """Register one open_clip architecture config (``<name>.json``) or a directory of them."""
    import open_clip

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model config {path} does not exist", fix="pass a JSON file or a directory of them")
    open_clip.add_model_config(path)


@functools.cache
def _register_project_configs() -> None:
    # Once per process, on first use (not at import): open_clip's registry is a module global.
    register_model_config(MODEL_CONFIGS_DIR)


def list_model_configs() -> list[str]:
    """Every open_clip architecture name known, the project's own included."""
    import open_clip

    _register_project_configs()
    return list(open_clip.list_models())


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
    if spec.kind == "hf":
        backbone = _create_hf(spec)
    else:
        backbone = _create_open_clip(spec)
    backbone.spec = str(spec)
    backbone.version = _weights_version(spec)
    return backbone.to(resolve_device(device)).eval()


def _create_open_clip(spec: BackboneSpec) -> Backbone:
    import open_clip

    from assistant.backbones.open_clip_backbone import OpenClipBackbone

    _register_project_configs()
    if spec.kind == "open_clip_dir":
        directory = Path(spec.name)
        if not (directory / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"{directory} is not an open_clip model directory",
                why="open_clip_config.json is missing",
                fix="point at a directory holding open_clip_config.json and open_clip_model.safetensors",
            )
        model_name = f"local-dir:{directory}"
        pretrained = None
    else:
        model_name, pretrained = spec.name, spec.pretrained
        if model_name not in open_clip.list_models():
            raise ConfigError(
                f"unknown open_clip architecture '{model_name}'",
                fix="use one of open_clip.list_models() (e.g. ViT-B-16, ViT-B-32), or register a JSON config "
                "with assistant.factory.register_model_config",
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, require_pretrained=spec.has_weights, weights_only=True
        )
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise ModelLoadError(
            f"could not load the weights of '{spec}'",
            why=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            fix="download the weights where there is internet and pass the local file "
            f"('{spec.name}:/path/to/open_clip_pytorch_model.bin') or an open_clip model directory; "
            "for OpenAI weights from a file use the '-quickgelu' architecture",
        ) from exc
    tokenizer = open_clip.get_tokenizer(model_name)
    return OpenClipBackbone(model, name=_display_name(spec), tokenizer=tokenizer, preprocess=preprocess)


def _create_hf(spec: BackboneSpec) -> Backbone:
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    from assistant.backbones.hf_backbone import HFClipBackbone

    # Loading a local directory needs no per-shard progress bar on stderr.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    directory = Path(spec.name)
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{directory} is not a Hugging Face model directory",
            why="config.json is missing",
            fix="save the model with CLIPModel.save_pretrained(dir) and its tokenizer with save_pretrained(dir)",
        )
    _require_safetensors(directory)
    try:
        # use_safetensors=True: a pytorch_model.bin next to the safetensors is never unpickled.
        model = CLIPModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the Hugging Face CLIP model in {directory}",
            why=str(exc).splitlines()[0],
            fix="the directory needs config.json, the weights (model.safetensors) and the tokenizer files "
            "(vocab.json, merges.txt)",
        ) from exc
    mean, std, resize = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), None
    processor_cfg = directory / "preprocessor_config.json"
    if processor_cfg.is_file():
        cfg = json.loads(processor_cfg.read_text())
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
        size = cfg.get("size", {})
        resize = size.get("shortest_edge") if isinstance(size, dict) else size
    return HFClipBackbone(model, tokenizer, name=f"hf:{directory.name}", image_mean=mean, image_std=std, resize=resize)


def _require_safetensors(directory: Path) -> None:
    """Refuse a Hugging Face directory whose weights exist only as pickles (``pytorch_model.bin``)."""
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(
        p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES or p.name.endswith(".bin.index.json")
    )
    what = f"the Hugging Face model in {directory} has no safetensors weights"
    if not pickles:
        raise ModelLoadError(
            what,
            why="there is no model.safetensors in it",
            fix="save the model there with CLIPModel.save_pretrained(dir), or download its safetensors files",
        )
    raise ModelLoadError(
        what,
        why=f"it holds only {', '.join(pickles)}: pickled weights, which can run code when they are loaded, "
        "so the assistant never loads them",
        fix='convert the model once, from a copy you trust: python -c "from transformers import CLIPModel; '
        f"CLIPModel.from_pretrained('{directory}').save_pretrained('{directory}')\" writes model.safetensors "
        "next to it (or download the model's safetensors files)",
    )


def _display_name(spec: BackboneSpec) -> str:
    if spec.kind == "open_clip_dir":
        return Path(spec.name).name
    return spec.name


def _weights_version(spec: BackboneSpec) -> str:
    if not spec.has_weights:
        return f"random:{spec.name}"
    if spec.kind == "open_clip" and spec.pretrained is not None and not Path(spec.pretrained).is_file():
        return f"{spec.name}:{spec.pretrained}"
    files = _weight_files(spec)
    if not files:
        return f"{spec.kind}:{spec.name}"
    return "sha256:" + weights_digest(files)


def _weight_files(spec: BackboneSpec) -> list[Path]:
    if spec.kind == "open_clip":
        return [Path(spec.pretrained)] if spec.pretrained else []
    directory = Path(spec.name)
    if spec.kind == "open_clip_dir":
        return [directory / f for f in OPEN_CLIP_WEIGHT_FILES if (directory / f).is_file()][:1]
    return sorted(directory.glob("*.safetensors"))  # the only weights a Hugging Face directory is loaded from


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
