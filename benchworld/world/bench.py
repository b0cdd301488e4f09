"""The offline quality benchmark: the standard ML-ZSL table on the world's test split.

Rows (docs/method.md §8): random scores; the frozen pretrained model used zero-shot (class token
only, prompt ensemble: CLIP's classifier); MKT stage 1 (image side fine-tuned on the seen labels
with distillation, two-stream head, untuned template); MKT stage 1 + 2 (the prompt tuned too).
Columns: ZSL (the unseen labels scored as their own vocabulary, as NUS-WIDE's
``prediction_81``) and GZSL (all labels), each mAP / F1@3 / F1@5 in percent.

Model selection uses the validation split (seen labels only: unseen labels are never annotated
outside the test split), never the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from assistant.backbone import Backbone, ImageFeatures
from assistant.calibration import Calibrator
from assistant.checkpoint import LoadedModel, load_model
from assistant.config import HeadConfig, PromptConfig, Stage1Config, Stage2Config
from assistant.data import ArrayImageDataset
from assistant.evaluate import evaluate, evaluate_gzsl, evaluate_zsl, map_difference, per_label_ap
from assistant.labels import LabelSet
from assistant.prompts import PromptSet, zero_shot_label_embeddings
from assistant.train import encode_dataset, train_stage1, train_stage2
from benchworld.world.dataset import MultiLabelSplit

__all__ = ["BenchConfig", "BenchResult", "MethodRow", "frozen_scores", "mkt_scores", "run_bench", "shift_gap"]

StatusFn = Callable[[str], None]
ProgressFn = Callable[[int, int, dict[str, float]], None]

# Prompts for the frozen zero-shot baseline: the phrasings world captions use (a text tower
# trained from scratch only knows those; docs/benchmark.md measured up to 17 mAP between them).
WORLD_PROMPTS = PromptSet(
    name="world",
    version=1,
    templates=("{}", "a photo of a {}.", "there is a {} in the scene.", "a photo of the {}."),
)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines one benchmark run (saved in its JSON)."""

    # Top-k of 64 patches: MKT keeps 16 of 196 (8%); 8 of 64 (12%) suits objects of 1-8 patches.
    head: HeadConfig = field(default_factory=lambda: HeadConfig(topk=8, mode="mkt"))
    prompt: PromptConfig = field(
        default_factory=lambda: PromptConfig(template="there is a {} in the scene.", tuning="coop")
    )
    stage1: Stage1Config = field(
        default_factory=lambda: Stage1Config(
            epochs=6, batch_size=128, lr=5e-4, warmup_epochs=0.5, distill_weight=1.0, crop_scale=(0.6, 1.0)
        )
    )
    stage2: Stage2Config = field(default_factory=lambda: Stage2Config(epochs=4, batch_size=128, lr=2e-3))
    # Distillation weights tried in stage 1 and chosen on validation (benchmark-notes.md: the
    # brake matters at this scale).
    distill_weights: tuple[float, ...] = (1.0,)
    ks: tuple[int, ...] = (3, 5)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class MethodRow:
    """One row of the table: ZSL and GZSL metrics (percent)."""

    method: str
    zsl: dict[str, float]
    gzsl: dict[str, float]
    # Per-label test AP over all labels (GZSL scoring), for the docs' diagnostics.
    per_label: dict[str, float]


@dataclass
class BenchResult:
    """Every number of a run, with its configuration."""

    rows: list[MethodRow]
    config: dict[str, Any]
    data: dict[str, Any]
    selection: dict[str, Any]
    seconds: dict[str, float]
    # MKT stage 1 + 2 minus the frozen model: {"zsl"|"gzsl": MapDifference.to_dict()}.
    margins: dict[str, dict[str, float]] = field(default_factory=dict)


@torch.no_grad()
def _features(model_or_backbone: Any, split: MultiLabelSplit, batch: int = 256) -> ImageFeatures:
    """Frozen features of a split through the eval transform."""
    model = model_or_backbone
    data = ArrayImageDataset(split.images, np.where(split.targets == 0, -1, split.targets).astype(np.int8))
    feats, _ = encode_dataset(model, data, batch_size=batch)
    return feats


@torch.no_grad()
def frozen_scores(backbone: Backbone, features: ImageFeatures, labels: Sequence[str]) -> NDArray[np.float64]:
    """CLIP zero-shot: cosine of the class token with the prompt-ensemble label embeddings."""
    emb = zero_shot_label_embeddings(backbone, labels, WORLD_PROMPTS)
    glob = torch.nn.functional.normalize(features.global_emb.float(), dim=-1)
    return (glob @ emb.cpu().T).double().numpy()


@torch.no_grad()
def mkt_scores(loaded: LoadedModel, features: ImageFeatures, labels: Sequence[str]) -> NDArray[np.float64]:
    """MKT's fused two-stream score (mkt mode: normalised over ``labels``)."""
    model = loaded.model
    emb = model.label_embeddings(list(labels), use_cache=False).float().cpu()
    out = model.score(features, emb, mode="mkt").fused
    return out.double().numpy()


@torch.no_grad()
def _backbone_features(backbone: Backbone, split: MultiLabelSplit, batch: int = 256) -> ImageFeatures:
    """A bare backbone's features of a split through its eval transform (no MKT model around it)."""
    from assistant.data import eval_transform

    transform = eval_transform(backbone)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2)
    parts = [
        backbone.encode_image(torch.stack([transform(im) for im in images[i : i + batch]]))
        for i in range(0, len(split), batch)
    ]
    # Zero-shot scores use the class token only; the patch tokens are not kept.
    return ImageFeatures(torch.cat([p.global_emb for p in parts]).float(), None)


@torch.no_grad()
def shift_gap(backbone: Backbone, shifted: MultiLabelSplit, plain: MultiLabelSplit, seed: int = 0) -> dict[str, Any]:
    """What the project camera costs the frozen model: zero-shot mAP on plain minus shifted test images.

    ``plain`` and ``shifted`` hold the same scenes (the world with and without its camera), so
    the labels are the same and the bootstrap over images is paired.
    """
    if plain.data_hash == shifted.data_hash or not np.array_equal(plain.targets, shifted.targets):
        raise ValueError("the shift gap needs the same test scenes with and without the camera")
    labels = list(shifted.label_names)
    unseen = [n for n, s in zip(labels, shifted.seen, strict=True) if not s]
    unseen_targets = shifted.targets[:, ~np.asarray(shifted.seen, dtype=bool)]
    out: dict[str, Any] = {"test_images": len(shifted)}
    for mode, names, targets in (("zsl", unseen, unseen_targets), ("gzsl", labels, shifted.targets)):
        a = frozen_scores(backbone, _backbone_features(backbone, plain), names)
        b = frozen_scores(backbone, _backbone_features(backbone, shifted), names)
        diff = map_difference(a, b, targets, seed=seed)
        out[f"{mode}_mAP_unshifted"] = 100 * float(np.mean(per_label_ap(a, targets)))
        out[f"{mode}_mAP_shifted"] = 100 * float(np.mean(per_label_ap(b, targets)))
        out[f"{mode}_gap"] = diff.difference
        out[f"{mode}_gap_interval"] = [diff.low, diff.high]
    return out


def _row(
    name: str, score: Callable[[Sequence[str]], NDArray[np.float64]], test: MultiLabelSplit, ks: Sequence[int]
) -> tuple[MethodRow, dict[str, NDArray[np.float64]]]:
    """One table row, with its ZSL and GZSL score matrices (for the margins)."""
    labels = list(test.label_names)
    unseen = [n for n, s in zip(labels, test.seen, strict=True) if not s]
    zsl_scores = score(unseen)
    zsl = evaluate_zsl(zsl_scores, test.targets, labels, test.seen, ks)
    full = score(labels)
    gzsl = evaluate_gzsl(full, test.targets, labels, ks)
    aps = per_label_ap(full, test.targets)
    row = MethodRow(name, zsl, gzsl, {n: round(100 * float(a), 2) for n, a in zip(labels, aps, strict=True)})
    return row, {"zsl": zsl_scores, "gzsl": full}


def _margins(
    mkt: dict[str, NDArray[np.float64]], frozen: dict[str, NDArray[np.float64]], test: MultiLabelSplit, seed: int
) -> dict[str, dict[str, float]]:
    """MKT stage 1 + 2 minus the frozen model, ZSL and GZSL mAP, with 95% paired-bootstrap intervals."""
    unseen_targets = test.targets[:, ~np.asarray(test.seen, dtype=bool)]
    return {
        "zsl": map_difference(mkt["zsl"], frozen["zsl"], unseen_targets, seed=seed).to_dict(),
        "gzsl": map_difference(mkt["gzsl"], frozen["gzsl"], test.targets, seed=seed).to_dict(),
    }


def _seen_targets(split: MultiLabelSplit) -> tuple[LabelSet, NDArray[np.int8]]:
    seen = [n for n, s in zip(split.label_names, split.seen, strict=True) if s]
    columns = [i for i, s in enumerate(split.seen) if s]
    return LabelSet(tuple(seen)), split.targets[:, columns]


def _val_fn(val: MultiLabelSplit) -> Callable[[Any], float]:
    """Validation mAP over the seen labels (the only ones annotated outside the test split)."""
    labels, targets = _seen_targets(val)

    def score(model: Any) -> float:
        feats = _features(model, val)
        emb = model.label_embeddings(list(labels), use_cache=False).float().cpu()
        fused = model.score(feats, emb, mode="mkt").fused.double().numpy()
        return float(evaluate(fused, targets, ks=(3,))["mAP"])

    return score


def run_bench(
    splits: dict[str, MultiLabelSplit],
    base_model: str,
    cfg: BenchConfig,
    *,
    status: StatusFn | None = None,
    progress: ProgressFn | None = None,
) -> tuple[BenchResult, LoadedModel]:
    """Run the whole table.

    Args:
        splits: ``train``, ``val`` and ``test`` world splits.
        base_model: The pretrained world model (``local-dir:assets/world-tiny``).
        cfg: The run's configuration.
        status: Called with a line before each phase.
        progress: Training progress callback (step, total, figures).

    Returns:
        The result and the final MKT model (stage 1 + 2) with a calibrator fitted on validation.
    """
    say = status or (lambda _msg: None)
    train, val, test = splits["train"], splits["val"], splits["test"]
    timings: dict[str, float] = {}
    seen_labels, train_targets = _seen_targets(train)
    train_data = ArrayImageDataset(train.images, train_targets)
    rows: list[MethodRow] = []

    say("random scores")
    rng = np.random.default_rng(cfg.seed)
    random_scores = rng.random((len(test), len(test.label_names)))
    name_index = {n: i for i, n in enumerate(test.label_names)}
    rows.append(_row("random", lambda ls: random_scores[:, [name_index[n] for n in ls]], test, cfg.ks)[0])

    say("frozen model, zero-shot (class token, prompt ensemble)")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    frozen = load_model(base_model, head=cfg.head, prompt=cfg.prompt)
    test_feats = _features(frozen.model, test)
    frozen_row, frozen_matrices = _row(
        "frozen zero-shot", lambda ls: frozen_scores(frozen.model.backbone, test_feats, ls), test, cfg.ks
    )
    rows.append(frozen_row)
    timings["frozen"] = time.perf_counter() - t0

    selection: dict[str, Any] = {"stage1": {}, "stage2": {}}
    best: tuple[float, LoadedModel] | None = None
    val_fn = _val_fn(val)
    for weight in cfg.distill_weights:
        say(f"MKT stage 1 (distillation weight {weight})")
        t0 = time.perf_counter()
        candidate = load_model(base_model, head=cfg.head, prompt=cfg.prompt)
        s1 = replace(cfg.stage1, distill_weight=weight, seed=cfg.seed)
        history = train_stage1(
            candidate.model,
            train_data,
            seen_labels,
            s1,
            teacher=frozen.model.backbone,
            val_fn=val_fn,
            progress=progress,
        )
        score = max(history.val_scores) if history.val_scores else float("nan")
        selection["stage1"][str(weight)] = {
            "val_mAP": history.val_scores,
            "best_epoch": history.best_epoch,
            "seconds": round(history.seconds, 1),
        }
        timings[f"stage1 w={weight}"] = time.perf_counter() - t0
        if best is None or score > best[0]:
            best = (score, candidate)
    assert best is not None
    selection["stage1"]["chosen_distill_weight"] = [
        w for w in cfg.distill_weights if max(selection["stage1"][str(w)]["val_mAP"] or [float("nan")]) == best[0]
    ][0]
    mkt = best[1]
    stage1_feats = _features(mkt.model, test)
    rows.append(_row("MKT stage 1", lambda ls: mkt_scores(mkt, stage1_feats, ls), test, cfg.ks)[0])

    say("MKT stage 2 (prompt tuning)")
    t0 = time.perf_counter()
    history2 = train_stage2(
        mkt.model, train_data, seen_labels, replace(cfg.stage2, seed=cfg.seed), val_fn=val_fn, progress=progress
    )
    selection["stage2"] = {"val_mAP": history2.val_scores, "best_epoch": history2.best_epoch}
    timings["stage2"] = time.perf_counter() - t0
    final_row, final_matrices = _row("MKT stage 1 + 2", lambda ls: mkt_scores(mkt, stage1_feats, ls), test, cfg.ks)
    rows.append(final_row)
    say("margins over the frozen model (paired bootstrap over test images)")
    margins = _margins(final_matrices, frozen_matrices, test, cfg.seed)

    say("calibration on validation")
    mkt.calibrator = _fit_calibrator(mkt, val)
    data = {
        "version": test.version,
        "sizes": {k: len(v) for k, v in splits.items()},
        "hashes": {k: v.data_hash for k, v in splits.items()},
        "labels": len(test.label_names),
        "unseen": [n for n, s in zip(test.label_names, test.seen, strict=True) if not s],
    }
    seconds = {k: round(v, 1) for k, v in timings.items()}
    return BenchResult(rows, cfg.to_dict(), data, selection, seconds, margins), mkt


def _fit_calibrator(loaded: LoadedModel, val: MultiLabelSplit) -> Calibrator:
    """Per-label Platt maps on validation cosine-mode scores of the seen labels."""
    labels, targets = _seen_targets(val)
    feats = _features(loaded.model, val)
    emb = loaded.model.label_embeddings(list(labels), use_cache=False).float().cpu()
    raw = loaded.model.score(feats, emb, mode="cosine").fused.double().numpy()
    return Calibrator.fit(raw, targets, list(labels))
