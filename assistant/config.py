"""Frozen configuration dataclasses of the model core (one comment per field).

Everything the core needs arrives as one of these (built by the CLI or the workers from their
settings); nothing in ``assistant`` reads the environment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

from assistant.errors import ConfigError

__all__ = ["HeadConfig", "PromptConfig", "Stage1Config", "Stage2Config", "from_dict", "to_dict"]

ScoreMode = Literal["mkt", "cosine"]

T = TypeVar("T")


@dataclass(frozen=True)
class HeadConfig:
    """The two-stream MKT head (docs/method.md §2.2)."""

    # Patches kept per label by the local stream (MKT trains and evaluates with 16, infers with 18).
    topk: int = 16
    # Weights of the global (class token) and local (top-k patches) streams; MKT averages them.
    global_weight: float = 0.5
    local_weight: float = 0.5
    # "mkt": raw dot products, each stream L2-normalised over the label axis per image, then
    # averaged (the method's ranking score; depends on the vocabulary). "cosine": features and
    # label embeddings L2-normalised, the same streams and weights; vocabulary-independent, so it
    # is what calibration and thresholds are fitted on.
    mode: ScoreMode = "mkt"

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ConfigError(f"head topk must be >= 1, got {self.topk}", fix="use e.g. topk=16")
        if self.global_weight < 0 or self.local_weight < 0 or self.global_weight + self.local_weight <= 0:
            raise ConfigError(
                "head stream weights must be non-negative and not both zero",
                fix="use e.g. global_weight=0.5, local_weight=0.5",
            )
        if self.mode not in ("mkt", "cosine"):
            raise ConfigError(f"unknown head mode '{self.mode}'", fix="use 'mkt' or 'cosine'")


@dataclass(frozen=True)
class PromptConfig:
    """How label names become text embeddings (docs/method.md §3)."""

    # The template of the tuned prompt; "{}" is the label. MKT's: "There is a {} in the scene".
    template: str = "There is a {} in the scene."
    # "coop": learnable context vectors shared across labels (CoOp), placed where the template's
    # words are. "template": the method's own variant, tuning the embedding rows of the template's
    # tokens (tied by token id, so a word used twice shares one row). "none": no tuning.
    tuning: Literal["coop", "template", "none"] = "coop"
    # Initialise the context from the template's word embeddings ("template") or N(0, 0.02).
    init: Literal["template", "random"] = "template"
    # Also tune the start/end-of-text embeddings (MKT's whole-table tuning moves them too).
    tune_sot_eot: bool = False
    # Prompt set (prompts/<name>.json) averaged for the untuned zero-shot baseline.
    prompt_set: str = "scene"

    def __post_init__(self) -> None:
        if self.template.count("{}") != 1:
            raise ConfigError(
                f"the prompt template must contain exactly one '{{}}', got {self.template!r}",
                fix="write e.g. 'There is a {} in the scene.'",
            )
        if self.tuning not in ("coop", "template", "none"):
            raise ConfigError(f"unknown prompt tuning '{self.tuning}'", fix="use 'coop', 'template' or 'none'")


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1: fine-tune the top of the image tower (docs/method.md §5)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    # How many of the last image blocks train (MKT: 2 of 12); the rest and the stem stay frozen.
    trainable_blocks: int = 2
    # BEiT-style layer decay: block i from the top gets lr * decay**i (MKT: 0.65).
    layer_decay: float = 0.65
    # Weight of the L1 distillation onto the frozen teacher's class embedding (MKT: 1.0).
    distill_weight: float = 1.0
    # Random resized crop scale and horizontal flips; the teacher sees the same augmented view.
    augment: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    # bf16 autocast on CPU (1.6x faster on AVX-512 bf16 machines); AMP is always on for CUDA.
    cpu_bf16: bool = False
    seed: int = 42
    # Stop after this many optimiser steps (0 = no limit); for budgets and tests.
    max_steps: int = 0


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2: prompt tuning with the image side frozen (docs/method.md §5)."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-8
    weight_decay: float = 0.05
    cpu_bf16: bool = False
    seed: int = 42
    max_steps: int = 0
    # Precompute the frozen image features once (the image side does not change in stage 2);
    # off only when augmentation must be re-drawn every epoch.
    cache_image_features: bool = True
    augment: bool = False


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a dict, refusing unknown keys with a clear error."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} fields: {', '.join(unknown)}", fix="use only: " + ", ".join(sorted(known))
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
