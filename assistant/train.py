"""MKT training: stage 1 (image side, ranking + distillation) and stage 2 (prompt tuning).

One readable loop per stage (docs/method.md §4-§5), driven by the dataclass configs, on CPU or
CUDA (AMP on CUDA, optional bf16 on CPU), deterministic for a seed. Model selection uses an
optional validation callback (never the test set): the best epoch's weights are kept.

Stage 1 trains the last ``trainable_blocks`` image blocks, the final norm and the projection
against fixed label embeddings, with the L1 distillation of the class embedding onto a frozen
teacher that sees the same augmented view. The teacher and the student share the frozen lower
blocks, so those run once per batch (MKT runs two full towers).

Stage 2 freezes the image side, computes its features once, and tunes the prompt context.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from assistant.backbone import Backbone, ImageFeatures
from assistant.config import HeadConfig, Stage1Config, Stage2Config
from assistant.data import eval_transform, train_transform
from assistant.devices import autocast_for
from assistant.errors import DataError
from assistant.head import two_stream_scores
from assistant.labels import LabelSet
from assistant.losses import l1_distillation, ranking_loss
from assistant.model import MKTModel

__all__ = ["TrainHistory", "seed_everything", "train_stage1", "train_stage2"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]
ValFn = Callable[[MKTModel], float]
Sample = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainHistory:
    """What a stage did: losses per epoch, validation scores, the epoch kept, the time taken."""

    stage: str
    steps: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    val_scores: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    tuned_parameters: list[str] = field(default_factory=list)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; returns a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _lr_at(step: int, total: int, base: float, min_lr: float, warmup: int) -> float:
    """Linear warm-up, then half-cosine from ``base`` to ``min_lr`` (per iteration, as MKT)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


class _Transformed(Dataset[Sample]):
    def __init__(self, base: Dataset[Sample], transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        pixels, targets = self.base[index]
        return self.transform(pixels), targets


def _trainable_indices(dataset: Dataset[Sample]) -> list[int]:
    """Images with at least one positive and one negative known label (MKT drops the others)."""
    targets = dataset_targets(dataset)
    keep = np.nonzero((targets > 0).any(axis=1) & (targets < 0).any(axis=1))[0]
    return [int(i) for i in keep]


def _check_data(dataset: Dataset[Sample], labels: LabelSet) -> list[int]:
    targets = dataset_targets(dataset)
    if targets.shape[1] != len(labels):
        raise DataError(
            f"the training targets have {targets.shape[1]} columns but {len(labels)} labels were given",
            fix="build the target matrix over exactly the training label set",
        )
    indices = _trainable_indices(dataset)
    if not indices:
        raise DataError(
            "no training image has both a positive and a negative label",
            fix="annotate more images, or mark absent tags as negatives (-1)",
        )
    return indices


def _scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def _restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state, strict=False)


def _finish(model: MKTModel, labels: LabelSet) -> None:
    model.requires_grad_(False).eval()
    model.embedding_cache.clear()
    # The labels just trained on are "seen" from now on (novel ones stay zero-shot).
    model.seen_labels = model.seen_labels.union(list(labels))


# --------------------------------------------------------------------------------------------------
# Stage 1
# --------------------------------------------------------------------------------------------------
def _stage1_param_groups(
    backbone: Backbone, first_trainable: int, cfg: Stage1Config
) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups with BEiT-style layer decay and no weight decay on 1-D parameters."""
    blocks = backbone.visual_blocks
    n_blocks = len(blocks)
    names: list[str] = []
    groups: list[dict[str, Any]] = []

    def add(params: list[tuple[str, nn.Parameter]], scale: float) -> None:
        decay = [p for _, p in params if p.ndim >= 2]
        no_decay = [p for _, p in params if p.ndim < 2]
        if decay:
            groups.append({"params": decay, "lr_scale": scale, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr_scale": scale, "weight_decay": 0.0})

    for i in range(first_trainable, n_blocks):
        depth_from_top = n_blocks - i  # the last block is 1: lr x decay**1 (MKT: block 11 x 0.65)
        prefix = _block_prefix(backbone, i)
        params = [(f"{prefix}.{n}", p) for n, p in blocks[i].named_parameters()]
        add(params, cfg.layer_decay**depth_from_top)
        names += [n for n, _ in params]
    head = backbone.visual_head_parameters()
    add(head, 1.0)
    names += [n for n, _ in head]
    return groups, names


def _block_prefix(backbone: Backbone, index: int) -> str:
    block = backbone.visual_blocks[index]
    for name, module in backbone.named_modules():
        if module is block:
            return str(name)
    raise RuntimeError("visual block not found among the backbone's modules")


def _shares_trunk(student: Backbone, teacher: Backbone, upto: int) -> bool:
    """Whether the teacher's stem and first ``upto`` blocks equal the student's (run them once)."""
    if type(student) is not type(teacher):
        return False
    s_params = dict(student.named_parameters())
    t_params = dict(teacher.named_parameters())
    trainable_prefixes = tuple(_block_prefix(student, i) + "." for i in range(upto, len(student.visual_blocks)))
    head_names = {n for n, _ in student.visual_head_parameters()}
    for name, value in s_params.items():
        if not student.is_visual_parameter(name) or name.startswith(trainable_prefixes) or name in head_names:
            continue
        other = t_params.get(name)
        if other is None or other.shape != value.shape or not torch.equal(other, value):
            return False
    return True


def _own_teacher(backbone: Backbone, teacher: Backbone | None, device: torch.device) -> Backbone:
    """The frozen teacher stage 1 distils onto, without moving or freezing the caller's module.

    Without a teacher it is a copy of the model's backbone as it is now, owned here. A caller's
    teacher on another device is copied to the model's device (``Module.to`` would move the
    caller's own module). One already there is used as it is: its forward runs under ``no_grad``,
    so its ``requires_grad`` flags are left alone, and ``train_stage1`` restores its training modes.
    """
    if teacher is None:
        return copy.deepcopy(backbone).to(device).eval().requires_grad_(False)
    first = next(teacher.parameters(), None)
    if first is not None and first.device != device:
        return copy.deepcopy(teacher).to(device).eval().requires_grad_(False)
    return teacher


def train_stage1(
    model: MKTModel,
    data: Dataset[Sample],
    labels: LabelSet,
    cfg: Stage1Config,
    *,
    teacher: Backbone | None = None,
    val_fn: ValFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainHistory:
    """Fine-tune the top of the image tower on multi-label targets (MKT stage 1).

    Args:
        model: The model to train in place (its prompt gives the fixed label embeddings).
        data: ``(uint8 CHW image, targets over labels)`` samples.
        labels: The columns of the targets (the seen labels).
        cfg: Stage-1 settings.
        teacher: The pretrained backbone to distil onto; default: a frozen copy of the model's
            own backbone as it is now (the base model in a first round). It is not changed: it
            runs in eval mode without gradients and gets its training modes back; one on
            another device than the model is copied there, not moved.
        val_fn: Called after each epoch, higher is better; the best epoch is kept.
        progress: Called after each step with (step, total steps, figures).

    Returns:
        The training history; ``tuned_parameters`` lists the state-dict keys it changed.
    """
    started = time.perf_counter()
    generator = seed_everything(cfg.seed)
    device = model.device
    backbone = model.backbone
    indices = _check_data(data, labels)
    n_blocks = len(backbone.visual_blocks)
    first_trainable = max(0, n_blocks - cfg.trainable_blocks)

    with torch.no_grad():
        label_emb = model.label_embeddings(list(labels), use_cache=False).detach().float()
    teacher_bb = _own_teacher(backbone, teacher, device)
    teacher_modes = {m: m.training for m in teacher_bb.modules()}
    shared = _shares_trunk(backbone, teacher_bb, first_trainable)

    model.requires_grad_(False)
    groups, tuned = _stage1_param_groups(backbone, first_trainable, cfg)
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scaler = _scaler(device)

    transform = train_transform(backbone, cfg.crop_scale) if cfg.augment else eval_transform(backbone)
    loader = DataLoader(
        _Transformed(Subset(data, indices), transform),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(indices) > cfg.batch_size,
        generator=generator,
    )
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = int(cfg.warmup_epochs * steps_per_epoch) if total > steps_per_epoch else 0
    head_cfg = HeadConfig(
        model.head_config.topk, model.head_config.global_weight, model.head_config.local_weight, "mkt"
    )
    history = TrainHistory("stage1", tuned_parameters=[f"backbone.{n}" for n in tuned])
    best: tuple[float, dict[str, torch.Tensor]] | None = None

    try:
        step = 0
        for epoch in range(cfg.epochs):
            model.train()
            teacher_bb.eval()
            losses = []
            for pixels, targets in loader:
                if step >= total:
                    break
                lr = _lr_at(step, total, cfg.lr, cfg.min_lr, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                pixels, targets = pixels.to(device), targets.to(device)
                with autocast_for(device, cfg.cpu_bf16):
                    with torch.no_grad():
                        trunk = backbone.run_visual_blocks(backbone.embed_image(pixels), 0, first_trainable)
                        if shared:
                            t_tokens = teacher_bb.run_visual_blocks(trunk, first_trainable)
                        else:
                            t_tokens = teacher_bb.run_visual_blocks(teacher_bb.embed_image(pixels))
                        t_global = teacher_bb.project_image(t_tokens).global_emb
                    feats = backbone.project_image(backbone.run_visual_blocks(trunk, first_trainable))
                    scores = two_stream_scores(feats, label_emb, head_cfg).fused
                    rank = ranking_loss(scores.float(), targets)
                    distill = l1_distillation(feats.global_emb.float(), t_global.float())
                    loss = rank + cfg.distill_weight * distill
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.item()))
                step += 1
                if progress is not None:
                    progress(
                        step, total, {"loss": losses[-1], "rank": float(rank.item()), "distill": float(distill.item())}
                    )
            history.epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
            best = _select(model, val_fn, history, epoch, best, names=set(history.tuned_parameters))
            if step >= total:
                break
    finally:
        # A caller's teacher is used where it lies, in eval mode here; it gets its modes back.
        for module, training in teacher_modes.items():
            module.train(training)

    if best is not None:
        _restore(model, best[1])
    _finish(model, labels)
    history.steps = step
    history.seconds = time.perf_counter() - started
    return history


def _select(
    model: MKTModel,
    val_fn: ValFn | None,
    history: TrainHistory,
    epoch: int,
    best: tuple[float, dict[str, torch.Tensor]] | None,
    *,
    names: set[str],
) -> tuple[float, dict[str, torch.Tensor]] | None:
    """Evaluate after an epoch and keep a copy of the trained tensors when it is the best yet."""
    if val_fn is None:
        return None
    model.eval()
    model.embedding_cache.clear()
    with torch.no_grad():
        score = float(val_fn(model))
    model.embedding_cache.clear()
    history.val_scores.append(score)
    logger.info("%s epoch %d: validation %.4f", history.stage, epoch, score)
    if best is None or score > best[0]:
        history.best_epoch = epoch
        state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}
        return score, state
    return best


# --------------------------------------------------------------------------------------------------
# Stage 2
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_dataset(
    model: MKTModel, data: Dataset[Sample], batch_size: int = 64, cpu_bf16: bool = False
) -> tuple[ImageFeatures, torch.Tensor]:
    """Frozen image features of a whole dataset (eval transform) and its targets, on the CPU."""
    device = model.device
    loader = DataLoader(_Transformed(data, eval_transform(model.backbone)), batch_size=batch_size, shuffle=False)
    feats, targets = [], []
    model.eval()
    for pixels, t in loader:
        with autocast_for(device, cpu_bf16):
            f = model.encode_images(pixels.to(device))
        feats.append(f.to("cpu", torch.float32))
        targets.append(t)
    return ImageFeatures.cat(feats), torch.cat(targets)


def train_stage2(
    model: MKTModel,
    data: Dataset[Sample],
    labels: LabelSet,
    cfg: Stage2Config,
    *,
    features: tuple[ImageFeatures, torch.Tensor] | None = None,
    val_fn: ValFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainHistory:
    """Tune the prompt context with the image side frozen (MKT stage 2).

    Args:
        model: The model to train in place.
        data: ``(uint8 CHW image, targets over labels)`` samples.
        labels: The columns of the targets (the seen labels).
        cfg: Stage-2 settings.
        features: Precomputed ``encode_dataset`` output for ``data`` (saves the image pass).
        val_fn: Called after each epoch, higher is better; the best epoch is kept.
        progress: Called after each step with (step, total steps, figures).
    """
    started = time.perf_counter()
    generator = seed_everything(cfg.seed)
    device = model.device
    indices = _check_data(data, labels)
    learner = model.prompt_learner
    if model.prompt_config.tuning == "none":
        raise DataError("stage 2 needs a tunable prompt", fix="set PromptConfig.tuning to 'coop' or 'template'")

    if features is None:
        features = encode_dataset(model, data, cfg.batch_size, cpu_bf16=cfg.cpu_bf16)
    all_feats, all_targets = features
    keep = torch.tensor(indices)
    feats, targets = all_feats.index(keep), all_targets[keep]

    model.requires_grad_(False)
    params = [learner.ctx] + ([learner.sot_eot] if model.prompt_config.tune_sot_eot else [])
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = _scaler(device)
    n = len(feats)
    steps_per_epoch = max(1, n // cfg.batch_size) if n > cfg.batch_size else 1
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    head_cfg = HeadConfig(
        model.head_config.topk, model.head_config.global_weight, model.head_config.local_weight, "mkt"
    )
    names = {f"prompt_learner.{n}" for n, _ in learner.named_parameters()}
    history = TrainHistory("stage2", tuned_parameters=sorted(names))
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    label_list = list(labels)

    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, cfg.lr, cfg.min_lr, 0)
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            batch = feats.index(idx).to(device)
            with autocast_for(device, cfg.cpu_bf16):
                label_emb = learner(label_list)
                scores = two_stream_scores(batch, label_emb, head_cfg).fused
                loss = ranking_loss(scores.float(), targets[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.item()))
            step += 1
            if progress is not None:
                progress(step, total, {"loss": losses[-1]})
        history.epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
        best = _select(model, val_fn, history, epoch, best, names=names)
        if step >= total:
            break

    if best is not None:
        _restore(model, best[1])
    _finish(model, labels)
    history.steps = step
    history.seconds = time.perf_counter() - started
    return history


def dataset_targets(data: Dataset[Sample]) -> NDArray[np.int8]:
    """The target matrix of a dataset (from its ``targets`` attribute when it has one)."""
    targets = getattr(data, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int8)
    return np.stack([data[i][1].numpy() for i in range(len(data))]).astype(np.int8)  # type: ignore[arg-type]
