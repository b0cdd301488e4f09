"""Vision-language pretraining on the benchmark world (the stand-in for web-scale CLIP training).

A tiny open_clip model (an architecture registered from JSON, ``world-tiny`` by default) is
trained contrastively (open_clip's ``ClipLoss``) on the world's endless image-caption stream,
which covers every label, seen and unseen. The result is saved as an ordinary open_clip model
directory (``open_clip_config.json`` + ``open_clip_model.safetensors``) that loads through the
backbone factory like any real checkpoint (``local-dir:<dir>``), with a ``manifest.json`` of
its provenance: config, seed, generator version, data hash, training curve, zero-shot scores.

Measured on the project's 2-core machines (docs/benchmark.md): fp32 steps of 256 pairs take
2-3 s on a quiet machine (bf16 autocast is emulated here and 2.8x slower), so the 25-minute
budget buys roughly 500-700 steps, 130-180k pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from assistant.backbone import Backbone
from assistant.errors import ConfigError
from assistant.factory import MODEL_CONFIGS_DIR, create_backbone
from benchworld.world.config import WorldConfig
from benchworld.world.stream import PretrainBatches, PretrainStream
from benchworld.world.vocabulary import VOCABULARY_VERSION, default_vocabulary

__all__ = ["PretrainConfig", "PretrainResult", "pretrain", "save_open_clip_dir", "stream_hash"]

ProgressFn = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class PretrainConfig:
    """Contrastive pretraining settings."""

    # An open_clip architecture (the project's JSON configs are registered by the factory).
    arch: str = "world-tiny"
    # Optimiser steps of `batch_size` pairs: 560 x 256 = 143k pairs, ~25 min on 2 quiet cores.
    steps: int = 560
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 60
    weight_decay: float = 0.1
    seed: int = 0
    # Share of each batch given to counterfactual twin pairs (hard negatives; docs/benchmark.md).
    twin_share: float = 0.3
    # A wall-clock safety stop; the schedule itself is defined by `steps`, so a run is
    # reproducible, and a run stopped early says so in its manifest.
    max_minutes: float = 60.0
    # Loader processes generating the stream next to the training step (one keeps up).
    loader_workers: int = 1
    # Torch intra-op threads (0 keeps torch's default: all cores).
    threads: int = 0
    # Let the cosine schedule follow the wall clock when max_minutes comes before the last step
    # (a shared machine): the run then still ends annealed. Off, a run is a pure function of its
    # settings and seed.
    time_schedule: bool = False

    @property
    def pairs(self) -> int:
        """Image-caption pairs the schedule covers."""
        return self.steps * self.batch_size


@dataclass
class PretrainResult:
    """What a pretraining run did."""

    steps: int
    pairs: int
    seconds: float
    stopped_early: bool
    curve: list[dict[str, float]] = field(default_factory=list)


def stream_hash(world: WorldConfig, cfg: PretrainConfig, context_length: int) -> str:
    """Identifies the pretraining data: the world definition and the stream slice trained on.

    The stream is a pure function of these (plus the generator code, versioned by
    ``VOCABULARY_VERSION``), so this hash stands for the data itself.
    """
    doc = {
        "world": world.to_dict(),
        "vocabulary": default_vocabulary(world.version).fingerprint,
        "batch_size": cfg.batch_size,
        "batches": [0, cfg.steps],
        "twin_share": cfg.twin_share,
        "context_length": context_length,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _lr(step: int, cfg: PretrainConfig, elapsed: float = 0.0) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    # On a shared machine the wall-time cap may come first: the cosine then follows the clock, so
    # a run cut at max_minutes still ends annealed (the manifest records the steps it made).
    if cfg.time_schedule:
        progress = max(progress, elapsed / (cfg.max_minutes * 60))
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    cfg: PretrainConfig,
    world: WorldConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    log_every: int = 20,
) -> tuple[Backbone, PretrainResult]:
    """Train a randomly initialised open_clip model contrastively on the world stream.

    Args:
        cfg: Settings.
        world: The world definition (default: ``WorldConfig()``).
        progress: Called after each step with (step, total steps, figures).
        log_every: Steps between points of the training curve.

    Returns:
        The backbone (an :class:`~assistant.backbone.Backbone`, eval mode) and what the run did.
    """
    from open_clip.loss import ClipLoss

    world = world or WorldConfig()
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ConfigError("pretraining needs at least one step of at least two pairs", fix="raise steps/batch_size")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.arch, allow_random=True)
    model: Any = backbone.model  # the open_clip CLIP model (untyped)
    if backbone.image_size != world.scene.image_size:
        raise ConfigError(
            f"the architecture {cfg.arch} takes {backbone.image_size}-px images but the world renders "
            f"{world.scene.image_size} px",
            fix="use an architecture config whose vision_cfg.image_size matches the world",
        )
    stream = PretrainStream(
        world, batch_size=cfg.batch_size, context_length=backbone.context_length, twin_share=cfg.twin_share
    )
    loader = torch.utils.data.DataLoader(
        PretrainBatches(stream, cfg.steps),
        batch_size=None,
        num_workers=cfg.loader_workers,
        prefetch_factor=4 if cfg.loader_workers else None,
        persistent_workers=False,
    )
    mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
    # CLIP's recipe: weight decay on matrices only, never on embeddings, norms, biases or the scale.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    loss_fn = ClipLoss()
    result = PretrainResult(steps=0, pairs=0, seconds=0.0, stopped_early=False)
    started = time.perf_counter()
    window: list[float] = []
    model.train()
    for step, (images, tokens) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg, time.perf_counter() - started)
        pixels = (images.float() / 255.0 - mean) / std
        image_features, text_features, scale = model(pixels, tokens)
        loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP caps the temperature at 100
        window.append(float(loss.item()))
        result.steps = step + 1
        elapsed = time.perf_counter() - started
        figures = {"loss": window[-1], "pairs_per_s": result.steps * cfg.batch_size / max(elapsed, 1e-9)}
        if progress is not None:
            progress(result.steps, cfg.steps, figures)
        if result.steps % log_every == 0 or result.steps == cfg.steps:
            result.curve.append(
                {
                    "step": result.steps,
                    "pairs": result.steps * cfg.batch_size,
                    "loss": float(np.mean(window)),
                    "lr": _lr(step, cfg, elapsed),
                    "logit_scale": float(model.logit_scale.exp().item()),
                    "seconds": round(elapsed, 1),
                }
            )
            window = []
        if elapsed > cfg.max_minutes * 60 and result.steps < cfg.steps:
            result.stopped_early = True
            break
    result.pairs = result.steps * cfg.batch_size
    result.seconds = time.perf_counter() - started
    backbone.eval()
    return backbone, result


def save_open_clip_dir(backbone: Backbone, arch: str, directory: Path, manifest: dict[str, Any]) -> Path:
    """Write an ordinary open_clip model directory (+ ``manifest.json``) loadable as ``local-dir:``."""
    config_path = MODEL_CONFIGS_DIR / f"{arch}.json"
    model_cfg = json.loads(config_path.read_text()) if config_path.is_file() else None
    if model_cfg is None:
        raise ConfigError(f"no JSON config for {arch} in {MODEL_CONFIGS_DIR}", fix="register the architecture first")
    bb = backbone
    directory.mkdir(parents=True, exist_ok=True)
    preprocess = {
        "size": bb.image_size,
        "mean": list(bb.image_mean),
        "std": list(bb.image_std),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
    )
    model: Any = bb.model
    # fp16 on disk halves the shipped file; open_clip casts it back to the model's fp32 on load.
    state = {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(directory / "open_clip_model.safetensors"))
    full = {
        "architecture": arch,
        "model_cfg": model_cfg,
        "generator_version": VOCABULARY_VERSION,
        "weights_dtype": "float16",
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        **manifest,
    }
    (directory / "manifest.json").write_text(json.dumps(full, indent=2, default=_json_default) + "\n")
    return directory


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)
