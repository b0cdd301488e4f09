"""One fine-tuning round, as pure functions: train a candidate, evaluate it against the model in service, decide.

The round (docs/method.md §5, §8; issue "Learning from corrections"):

1. **Labels.** The columns of every split are the current vocabulary. The candidate trains on
   the labels the current model already knows (*seen*) that have annotations, plus every other
   label with at least ``min_label_positives`` positives and ``min_label_negatives`` negatives
   in the training split: such a label becomes seen. Labels below that stay novel: scored
   zero-shot through the text tower, never trained on a handful of examples.
2. **Training.** A copy of the current model is trained: stage 1 (top image blocks, ranking +
   L1 distillation onto the frozen *base* backbone, so rounds never drift from the pretrained
   model) and/or stage 2 (prompt tuning on frozen image features, which a ``features_fn`` may
   serve from a cache: the image side does not change in stage 2). Epochs are selected on the
   validation split carved from the training annotations (never the held-out split).
3. **Evaluation** of both models on the held-out split, which is never trained on, with the
   same protocol (``assistant.round_eval``): mAP over the labels with held-out positives and
   negatives on the served cosine scores, split seen/novel by the current model's seen set, and
   F1@K on cross-fitted calibrated probabilities.
4. **Decision**: promote when the candidate's held-out mAP is not below the current model's by
   more than ``tolerance`` points, and its pre-annotations (the break-even rule of ``costs`` on
   the held-out split) would not cost annotators more edits than the current model's, beyond
   ``edits_tolerance``. The candidate's own calibrator is then fitted on the whole held-out split.

Nothing here touches the registry, Label Studio or the disk except :meth:`RoundOutcome.save_candidate`;
``workers.rounds`` and ``benchworld.simulation`` drive it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from assistant.backbone import Backbone, ImageFeatures
from assistant.calibration import Calibrator, FitConfig
from assistant.checkpoint import LoadedModel, Sidecar, save_checkpoint
from assistant.config import Stage1Config, Stage2Config, to_dict
from assistant.corrections import AnnotatedImage, assign_split, correction_targets, counts
from assistant.data import manifest_hash
from assistant.errors import ConfigError, DataError
from assistant.evaluate import per_label_ap
from assistant.labels import LabelSet
from assistant.model import MKTModel
from assistant.round_eval import Decision, Evaluation, decide, evaluable_labels, evaluate_model
from assistant.train import TrainHistory, dataset_targets, encode_dataset, train_stage1, train_stage2
from preannotation import EditCosts

__all__ = [
    "Candidate",
    "FeatureFn",
    "InsufficientDataError",
    "RoundConfig",
    "RoundData",
    "RoundOutcome",
    "RoundProgress",
    "RoundSplit",
    "Stage",
    "TargetColumns",
    "choose_training_labels",
    "run_round",
    "split_annotations",
    "train_candidate",
]

logger = logging.getLogger(__name__)

Stage = Literal["stage1", "stage2"]
Sample = tuple[torch.Tensor, torch.Tensor]
#: ``progress(phase, done, total)``; phases: ``stage1``, ``stage2``, ``evaluate``.
RoundProgress = Callable[[str, int, int], None]
#: Frozen image features of a dataset for a model, given the dataset's item ids (e.g. content
#: hashes, to look them up in a feature cache); ``encode_dataset``'s output contract.
FeatureFn = Callable[[MKTModel, Dataset[Sample], Sequence[str]], tuple[ImageFeatures, torch.Tensor]]


class InsufficientDataError(DataError):
    """Too few annotations for a round (it is skipped, not failed)."""


@dataclass(frozen=True)
class RoundConfig:
    """How a round trains, evaluates and decides."""

    # Training stages, in order: "stage1" (image side) and/or "stage2" (prompt tuning).
    stages: tuple[Stage, ...] = ("stage1", "stage2")
    # Few annotated images per round: more epochs than MKT's 20 over 160k images would overfit
    # less than they would on big data, but 8 epochs of a few hundred images take ~10 s on a CPU.
    stage1: Stage1Config = Stage1Config(epochs=8, batch_size=32, warmup_epochs=1.0, distill_weight=0.3)
    stage2: Stage2Config = Stage2Config(epochs=4, batch_size=32)
    # Held-out mAP points the candidate may lose and still be promoted (noise of a small
    # held-out set; 0 promotes only equal or better candidates).
    tolerance: float = 0.5
    # K of the micro top-K metrics (labels predicted per image).
    ks: tuple[int, ...] = (3,)
    # A label the current model has not trained on joins training with this many positives and
    # negatives in the training split (below ~5, a label's ranking is mostly noise).
    min_label_positives: int = 5
    min_label_negatives: int = 5
    # Fewer images than this (with a positive and a negative training label) skips the round.
    min_train_images: int = 8
    # Fewer held-out images than this skips the round: the comparison would be noise.
    min_heldout_images: int = 8
    # Validation splits smaller than this are not used for epoch selection (the last epoch is kept).
    min_val_images: int = 8
    # Batch size of feature extraction and scoring.
    eval_batch_size: int = 64
    # Calibration fit settings and the number of cross-fitting folds for F1@K and the edits.
    calibration: FitConfig = FitConfig()
    calibration_folds: int = 2
    # The pre-annotation rule the promotion gate counts edits under: the project's edit costs and
    # the per-task cap on shown tags (the backend's default cap is 50).
    costs: EditCosts = EditCosts()
    max_tags: int | None = 50
    # How much more of the from-scratch work (edits_vs_scratch) a candidate's pre-annotations may
    # cost on the held-out split and still be promoted.
    edits_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not self.stages or any(s not in ("stage1", "stage2") for s in self.stages):
            raise ConfigError(f"invalid round stages {self.stages!r}", fix="use ('stage1',), ('stage2',) or both")
        if self.tolerance < 0:
            raise ConfigError(f"the promotion tolerance must be >= 0, got {self.tolerance}", fix="use e.g. 0.5")
        if self.edits_tolerance < 0:
            raise ConfigError(f"the edits tolerance must be >= 0, got {self.edits_tolerance}", fix="use e.g. 0.02")
        if self.calibration_folds < 2:
            raise ConfigError("cross-fitting needs at least 2 folds", fix="use calibration_folds=2")


class TargetColumns(Dataset[Sample]):
    """A view of a dataset with its targets restricted to some columns (``targets`` attribute kept).

    Args:
        base: ``(image, targets)`` samples.
        columns: Column indices to keep, in order.
    """

    def __init__(self, base: Dataset[Sample], columns: Sequence[int]) -> None:
        self.base = base
        self.columns = torch.as_tensor(list(columns), dtype=torch.long)
        self.targets = dataset_targets(base)[:, list(columns)]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> Sample:
        pixels, _ = self.base[index]
        return pixels, torch.from_numpy(self.targets[index])


@dataclass(frozen=True)
class RoundSplit:
    """The annotated images of one split.

    Attributes:
        data: ``(uint8 image, targets over RoundData.labels)`` samples.
        items: One stable id per image (content hash or path): the manifest and feature-cache key.
    """

    data: Dataset[Sample]
    items: tuple[str, ...]

    @property
    def targets(self) -> NDArray[np.int8]:
        """The target matrix."""
        return dataset_targets(self.data)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class RoundData:
    """Everything a round learns from and is judged on.

    Attributes:
        labels: The current vocabulary: the columns of every split's targets.
        train: What the candidate trains on.
        heldout: The held-out evaluation split (never trained on).
        val: Model selection inside training (carved from the training annotations), if any.
    """

    labels: LabelSet
    train: RoundSplit
    heldout: RoundSplit
    val: RoundSplit | None = None

    def manifest_hash(self) -> str:
        """Digest of the splits' item ids and targets (recorded in the checkpoint sidecar)."""
        splits = [("train", self.train), ("val", self.val), ("heldout", self.heldout)]
        items = [f"{name}:{item}" for name, split in splits if split is not None for item in split.items]
        targets = [split.targets for _, split in splits if split is not None and len(split)]
        matrix = np.concatenate(targets) if targets else np.zeros((0, len(self.labels)), dtype=np.int8)
        return manifest_hash(["labels:" + "\x1f".join(self.labels), *items], matrix)

    def summary(self) -> dict[str, int]:
        """Image counts per split."""
        return {
            "train_images": len(self.train),
            "val_images": 0 if self.val is None else len(self.val),
            "heldout_images": len(self.heldout),
            "vocabulary": len(self.labels),
        }


def split_annotations(
    annotations: Sequence[AnnotatedImage],
    labels: LabelSet,
    dataset: Callable[[list[int], NDArray[np.int8]], Dataset[Sample]],
    *,
    salt: str,
    heldout_fraction: float,
    val_fraction: float,
    min_val_images: int,
) -> RoundData:
    """A round's splits of its annotations: the one rule of live rounds and the simulations.

    Each image's side is :func:`~assistant.corrections.assign_split`'s (a hash of ``salt`` and its
    key) and its targets :func:`~assistant.corrections.correction_targets`'. A validation split
    smaller than ``min_val_images`` could not select an epoch: its images are trained on instead,
    so a young project's annotations are not thrown away. Only the held-out side never moves.

    Args:
        annotations: The annotated images, in any order.
        labels: The vocabulary (the targets' columns).
        dataset: ``dataset(rows, targets)``: the samples of those annotations (indices into
            ``annotations``) with those targets (image files for live rounds, arrays in simulations).
        salt: Per-project salt of the split (``project-<id>``).
        heldout_fraction: Share held out for evaluation.
        val_fraction: Share used for epoch selection.
        min_val_images: Fewer validation images than this are trained on.
    """
    sides = assign_split(
        [a.key for a in annotations], salt=salt, heldout_fraction=heldout_fraction, val_fraction=val_fraction
    )
    if 0 < sides.count("val") < min_val_images:
        sides = ["train" if side == "val" else side for side in sides]
    targets = correction_targets(labels, annotations)

    def split(name: str) -> RoundSplit:
        rows = [i for i, side in enumerate(sides) if side == name]
        return RoundSplit(dataset(rows, targets[rows]), tuple(annotations[i].identity for i in rows))

    val = split("val")
    return RoundData(labels, train=split("train"), heldout=split("heldout"), val=val if len(val) else None)


@dataclass
class Candidate:
    """The trained candidate model.

    Attributes:
        loaded: The model with its calibrator (the parent's until :func:`run_round` fits one).
        trained_labels: The labels it was trained on (now all seen).
        newly_seen: Trained labels the parent had not seen.
        histories: One per stage run.
        tuned_parameters: State-dict keys training changed (for delta checkpoints).
    """

    loaded: LoadedModel
    trained_labels: LabelSet
    newly_seen: tuple[str, ...]
    histories: list[TrainHistory] = field(default_factory=list)
    tuned_parameters: set[str] = field(default_factory=set)


@dataclass
class RoundOutcome:
    """What a round produced and decided.

    Attributes:
        candidate: The trained candidate (calibrated on the held-out split).
        current: The current model's held-out evaluation.
        evaluated: The candidate's held-out evaluation.
        decision: Promote or keep.
        seen: The current model's seen labels (the seen/novel split of the metrics).
        labels: The vocabulary.
        heldout_targets: The held-out target matrix (for PR curves in reports).
        data_summary: Image counts per split.
        manifest_hash: :meth:`RoundData.manifest_hash`.
        seconds: Wall time per phase.
        config: The round configuration.
    """

    candidate: Candidate
    current: Evaluation
    evaluated: Evaluation
    decision: Decision
    seen: frozenset[str]
    labels: LabelSet
    heldout_targets: NDArray[np.int8]
    data_summary: dict[str, int]
    manifest_hash: str
    seconds: dict[str, float]
    config: RoundConfig

    def sidecar_metrics(self) -> dict[str, float]:
        """The candidate's held-out metrics plus the comparison, for the checkpoint sidecar."""
        metrics = dict(self.evaluated.metrics)
        if "mAP" in self.current.metrics:
            metrics["current_mAP"] = self.current.metrics["mAP"]
        if np.isfinite(self.decision.delta):
            metrics["delta_mAP"] = self.decision.delta
        if "edits_vs_scratch" in self.current.metrics:
            metrics["current_edits_vs_scratch"] = self.current.metrics["edits_vs_scratch"]
        return metrics

    def save_candidate(
        self,
        directory: Any,
        *,
        version: str,
        round_id: str,
        parent_version: str | None,
        extra: dict[str, Any] | None = None,
    ) -> Sidecar:
        """Write the candidate checkpoint (atomic) and give the in-memory model its version.

        Args:
            directory: The checkpoint directory to create (a staging place: register it after).
            version: Its version id.
            round_id: The round.
            parent_version: The version it was trained from.
            extra: More provenance for the sidecar.
        """
        provenance = {
            "round": {
                "trained_labels": list(self.candidate.trained_labels),
                "newly_seen": list(self.candidate.newly_seen),
                "data": self.data_summary,
                "decision": {"promote": self.decision.promote, "reason": self.decision.reason},
                "stages": list(self.config.stages),
                "stage1": to_dict(self.config.stage1),
                "stage2": to_dict(self.config.stage2),
                "tolerance": self.config.tolerance,
                "costs": self.config.costs.to_dict(),
                "max_tags": self.config.max_tags,
                "edits_tolerance": self.config.edits_tolerance,
            },
            **(extra or {}),
        }
        sidecar = save_checkpoint(
            self.candidate.loaded,
            directory,
            version=version,
            tuned_parameters=self.candidate.tuned_parameters,
            parent_version=parent_version,
            round_id=round_id,
            metrics=self.sidecar_metrics(),
            data_manifest_hash=self.manifest_hash,
            extra=provenance,
        )
        model = self.candidate.loaded.model
        model.version = version
        model.embedding_cache.clear()
        return sidecar


# --------------------------------------------------------------------------------------------------
# Labels and training
# --------------------------------------------------------------------------------------------------
def choose_training_labels(
    labels: LabelSet, targets: NDArray[Any], seen: frozenset[str] | set[str], cfg: RoundConfig
) -> LabelSet:
    """The labels a candidate trains on (see the module docstring, step 1).

    Args:
        labels: The vocabulary (columns of ``targets``).
        targets: The training split's targets.
        seen: The current model's seen labels.
        cfg: The thresholds.

    Returns:
        The training labels, in vocabulary order.
    """
    pos, neg = counts(targets)
    chosen = []
    for j, name in enumerate(labels):
        if name in seen:
            keep = pos[j] + neg[j] > 0
        else:
            keep = pos[j] >= cfg.min_label_positives and neg[j] >= cfg.min_label_negatives
        if keep:
            chosen.append(name)
    return LabelSet(tuple(chosen))


def _trainable_images(targets: NDArray[Any]) -> int:
    return int(((targets > 0).any(axis=1) & (targets < 0).any(axis=1)).sum())


def _val_fn(split: RoundSplit | None, columns: list[int], names: list[str], cfg: RoundConfig) -> Any:
    """Held-out-style mAP on the validation split over the training labels, or None when too small."""
    if split is None or len(split) < cfg.min_val_images:
        return None
    view = TargetColumns(split.data, columns)
    evaluable = evaluable_labels(view.targets)
    if not evaluable.any():
        return None

    def score(model: MKTModel) -> float:
        feats, targets = encode_dataset(model, view, cfg.eval_batch_size)
        raw = model.score(feats, names, mode="cosine", use_cache=False).fused.float().cpu().numpy()
        ap = per_label_ap(raw, targets.numpy())
        return float(ap[evaluable].mean())

    return score


def train_candidate(
    parent: LoadedModel,
    data: RoundData,
    cfg: RoundConfig,
    *,
    teacher: Backbone | None = None,
    features_fn: FeatureFn | None = None,
    progress: RoundProgress | None = None,
) -> Candidate:
    """Train a copy of ``parent`` on the round's training split (the parent is not changed).

    Args:
        parent: The model in service.
        data: The round's splits.
        cfg: Stages and their settings.
        teacher: The frozen base backbone stage 1 distils onto (default: a frozen copy of the
            parent's own backbone).
        features_fn: Stage-2 image features (default: :func:`assistant.train.encode_dataset`).
        progress: ``progress(stage, step, total)``.

    Raises:
        InsufficientDataError: No label or too few images to train on.
    """
    seen = frozenset(parent.model.seen_labels)
    train_labels = choose_training_labels(data.labels, data.train.targets, seen, cfg)
    columns = [data.labels.index(n) for n in train_labels]
    view = TargetColumns(data.train.data, columns)
    trainable = _trainable_images(view.targets) if columns else 0
    if not columns or trainable < cfg.min_train_images:
        raise InsufficientDataError(
            f"not enough training annotations: {trainable} usable images over {len(columns)} labels",
            why=f"a round needs at least {cfg.min_train_images} images with a positive and a negative label",
            fix="annotate more images, then run the round again",
        )
    model = _copy_model(parent.model)
    model.version = f"{parent.model.version}+candidate"
    model.embedding_cache.clear()
    candidate = Candidate(
        loaded=LoadedModel(model, parent.calibrator, parent.sidecar, None),
        trained_labels=train_labels,
        newly_seen=tuple(n for n in train_labels if n not in seen),
    )
    val_fn = _val_fn(data.val, columns, list(train_labels), cfg)
    for stage in cfg.stages:

        def report(step: int, total: int, figures: dict[str, float], _stage: str = stage) -> None:
            del figures  # the losses go to the log at the end of the stage
            if progress is not None:
                progress(_stage, step, total)

        logger.info("%s: training on %d images over %d labels", stage, trainable, len(columns))
        if stage == "stage1":
            history = train_stage1(
                model, view, train_labels, cfg.stage1, teacher=teacher, val_fn=val_fn, progress=report
            )
        else:
            feats = (features_fn or _encode)(model, view, data.train.items)
            history = train_stage2(
                model, view, train_labels, cfg.stage2, features=feats, val_fn=val_fn, progress=report
            )
        candidate.histories.append(history)
        candidate.tuned_parameters.update(history.tuned_parameters)
        logger.info(
            "%s: %d steps in %.1f s, losses %s, validation %s (kept epoch %s)",
            stage,
            history.steps,
            history.seconds,
            [round(x, 4) for x in history.epoch_losses],
            [round(x, 4) for x in history.val_scores],
            history.best_epoch,
        )
    return candidate


def _copy_model(model: MKTModel) -> MKTModel:
    """A deep copy that shares the backbone's tokenizer (stateless for training, and its ~100k
    BPE table entries made a plain deep copy take ~5 s on a 2-core CPU)."""
    memo: dict[int, Any] = {}
    for name, value in vars(model.backbone).items():
        if "tokenizer" in name:
            memo[id(value)] = value
    return copy.deepcopy(model, memo)


def _encode(model: MKTModel, data: Dataset[Sample], items: Sequence[str]) -> tuple[ImageFeatures, torch.Tensor]:
    del items  # no cache: every image is encoded
    return encode_dataset(model, data)


def _eval_args(cfg: RoundConfig) -> dict[str, Any]:
    return {
        "ks": cfg.ks,
        "calibration": cfg.calibration,
        "folds": cfg.calibration_folds,
        "batch_size": cfg.eval_batch_size,
        "costs": cfg.costs,
        "max_tags": cfg.max_tags,
    }


def run_round(
    parent: LoadedModel,
    data: RoundData,
    cfg: RoundConfig,
    *,
    teacher: Backbone | None = None,
    features_fn: FeatureFn | None = None,
    progress: RoundProgress | None = None,
) -> RoundOutcome:
    """Train, evaluate and decide (the module docstring's steps 1-4).

    Args:
        parent: The model in service (not modified).
        data: The round's splits; targets over the vocabulary ``data.labels``.
        cfg: Round settings.
        teacher: The frozen base backbone for stage-1 distillation.
        features_fn: Stage-2 image features (e.g. from a feature cache).
        progress: ``progress(phase, done, total)``.

    Raises:
        InsufficientDataError: Too few held-out or training annotations (nothing was trained).
    """
    started = time.perf_counter()
    if len(data.heldout) < cfg.min_heldout_images:
        raise InsufficientDataError(
            f"not enough held-out annotations: {len(data.heldout)} images",
            why=f"the comparison with the model in service needs at least {cfg.min_heldout_images}",
            fix="annotate more images (a fixed share of them is held out for evaluation)",
        )
    seen = frozenset(parent.model.seen_labels)
    candidate = train_candidate(parent, data, cfg, teacher=teacher, features_fn=features_fn, progress=progress)
    trained = time.perf_counter()

    targets = data.heldout.targets
    if progress is not None:
        progress("evaluate", 0, 2)
    current_feats, _ = encode_dataset(parent.model, data.heldout.data, cfg.eval_batch_size)
    current = evaluate_model(parent, current_feats, targets, data.labels, seen, **_eval_args(cfg))
    if progress is not None:
        progress("evaluate", 1, 2)
    model = candidate.loaded.model
    # Stage 2 alone leaves the image tower as it was: the parent's features are the candidate's.
    same_tower = "stage1" not in cfg.stages
    candidate_feats = current_feats if same_tower else encode_dataset(model, data.heldout.data, cfg.eval_batch_size)[0]
    evaluated = evaluate_model(
        candidate.loaded, candidate_feats, targets, data.labels, seen, fallback=parent.calibrator, **_eval_args(cfg)
    )
    if progress is not None:
        progress("evaluate", 2, 2)
    try:
        candidate.loaded.calibrator = Calibrator.fit(evaluated.raw_scores, targets, list(data.labels), cfg.calibration)
    except DataError as exc:
        logger.warning("the candidate keeps its parent's calibrator: %s", exc.message)
    decision = decide(current, evaluated, cfg.tolerance, cfg.edits_tolerance)
    logger.info("round decision: %s", decision.reason)
    return RoundOutcome(
        candidate=candidate,
        current=current,
        evaluated=evaluated,
        decision=decision,
        seen=seen,
        labels=data.labels,
        heldout_targets=np.asarray(targets, dtype=np.int8),
        data_summary=data.summary(),
        manifest_hash=data.manifest_hash(),
        seconds={"train": trained - started, "evaluate": time.perf_counter() - trained},
        config=cfg,
    )
