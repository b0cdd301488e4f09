"""Statistics of a generated world against the real-data targets it is matched to.

Each statistic is computed from generated images and labels, never read from the configuration,
so a test that compares it with its target checks the generator itself. The targets and their
tolerances are stated here once (``TARGETS``); ``assistant world stats`` prints both and the
tests in ``tests/benchworld/world/test_structure.py`` assert them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from benchworld.world.config import Stream, WorldConfig
from benchworld.world.project import project_scene
from benchworld.world.scenes import SceneGenerator
from benchworld.world.structure import COCO128_TARGETS
from benchworld.world.vocabulary import LabelKind, default_vocabulary

__all__ = [
    "TARGETS",
    "Target",
    "WorldStats",
    "cooccurrence_lift",
    "measure_world",
    "near_duplicate_share",
    "prevalence_curve",
]


@dataclass(frozen=True)
class Target:
    """A statistic's target and the range a generated world must fall in.

    Attributes:
        name: The statistic.
        target: The value it is matched to.
        low: Least accepted value.
        high: Largest accepted value.
        source: Where the target comes from.
    """

    name: str
    target: float
    low: float
    high: float
    source: str

    def holds(self, value: float) -> bool:
        """Whether ``value`` is within the tolerance."""
        return self.low <= value <= self.high


# Tolerances on the real statistics are their 95% bootstrap intervals over COCO128's 256 images
# (300 resamples): a world inside them is as close as the real sample can tell.
_COCO = "COCO128 labels.jsonl (256 images); range: its 95% bootstrap interval"
TARGETS: Final[dict[str, Target]] = {
    t.name: t
    for t in (
        Target("slope_ranks_1_50", COCO128_TARGETS["slope_ranks_1_50"], -0.67, -0.54, _COCO),
        Target("top_prevalence", 0.30, 0.30, 1.0, "issue 17: the most common label in 30% or more"),
        Target("rarest_prevalence", 0.01, 0.0, 0.02, "issue 17: the rarest labels in about 1% or less"),
        Target("median_lift", COCO128_TARGETS["median_lift_frequent_pairs"], 4.2, 6.35, _COCO),
        Target("burst_share", 0.25, 0.20, 0.30, "BurstConfig.share (arXiv 1901.11409: >= 10% redundant)"),
        Target("pretrain_rank_correlation", 0.0, -1.0, 0.5, "issue 17: web frequencies differ from the project's"),
    )
}


def prevalence_curve(truth: NDArray[np.bool_]) -> dict[str, float]:
    """Rank-frequency statistics of the labels' image prevalences.

    Args:
        truth: ``(N, L)`` bool ground truth.

    Returns:
        ``top_prevalence``, ``rarest_prevalence`` (of labels present at all), the least-squares
        log-log ``slope_ranks_1_50`` (over as many ranks as there are, up to 50), the
        prevalence at ranks 1, 2, 10, 20, 40 and the tags per image.
    """
    prevalence = np.sort(truth.mean(axis=0))[::-1]
    present = prevalence[prevalence > 0]
    ranks = min(50, len(present))
    slope = float(np.polyfit(np.log(np.arange(1, ranks + 1)), np.log(present[:ranks]), 1)[0])
    out = {
        "top_prevalence": float(present[0]),
        "rarest_prevalence": float(present[-1]),
        "slope_ranks_1_50": slope,
        "tags_per_image": float(truth.sum(axis=1).mean()),
    }
    for r in (1, 2, 10, 20, 40):
        if r <= len(present):
            out[f"prevalence_rank_{r}"] = float(present[r - 1])
    return out


def cooccurrence_lift(
    truth: NDArray[np.bool_], names: Sequence[str], min_share: float = COCO128_TARGETS["frequent_pair_min_share"]
) -> tuple[float, int, list[tuple[str, str, float]]]:
    """Median lift ``P(a, b) / (P(a) P(b))`` over the pairs seen in at least ``min_share`` of images.

    COCO128's statistic counts pairs seen at least 3 times in 256 images; the same *share* keeps
    it comparable on a world sample of another size.

    Returns:
        The median lift, the number of frequent pairs, and the five pairs with the highest lift.
    """
    x = truth.astype(np.float64)
    n = x.shape[0]
    joint = (x.T @ x) / n
    single = x.mean(axis=0)
    lifts: list[tuple[str, str, float]] = []
    for a, b in itertools.combinations(range(x.shape[1]), 2):
        if joint[a, b] >= min_share and single[a] > 0 and single[b] > 0:
            lifts.append((names[a], names[b], float(joint[a, b] / (single[a] * single[b]))))
    if not lifts:
        return float("nan"), 0, []
    median = float(np.median([lift for _, _, lift in lifts]))
    return median, len(lifts), sorted(lifts, key=lambda t: -t[2])[:5]


def near_duplicate_share(images: NDArray[np.uint8], truth: NDArray[np.bool_], threshold: float = 0.5) -> float:
    """Share of images with a near-duplicate next to them in the stream (a photo series).

    Two neighbouring images are near-duplicates when they show the same labels and their 8 x 8
    grey thumbnails, each standardised, correlate above ``threshold``. Shots of one scene do (a
    re-framing of a few pixels, another exposure, the camera's blur, noise and JPEG: median 0.85,
    5th percentile 0.51 on 80 burst pairs); independent neighbours almost never show the same 7-9
    labels, and their thumbnails correlate at a median of 0.
    """
    n, size = images.shape[0], images.shape[1]
    factor = max(1, size // 8)
    grey = images.astype(np.float32).mean(axis=3)
    thumbs = grey[:, : factor * 8, : factor * 8].reshape(n, 8, factor, 8, factor).mean(axis=(2, 4)).reshape(n, -1)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= thumbs.std(axis=1, keepdims=True) + 1e-6
    correlation = (thumbs[:-1] * thumbs[1:]).mean(axis=1)
    same_labels = (truth[:-1] == truth[1:]).all(axis=1)
    close = same_labels & (correlation > threshold)
    member = np.zeros(n, dtype=bool)
    member[:-1] |= close
    member[1:] |= close
    return float(member.mean())


@dataclass(frozen=True)
class WorldStats:
    """A world's measured statistics.

    Attributes:
        version: The world version.
        images: Images measured per stream.
        values: Statistic name -> measured value (the keys of ``TARGETS`` and more).
        top_pairs: The highest-lift frequent object/background pairs.
    """

    version: str
    images: int
    values: dict[str, float]
    top_pairs: list[tuple[str, str, float]]

    def failures(self) -> list[str]:
        """The targets this world misses, described."""
        return [
            f"{t.name} = {self.values[t.name]:.3f} is outside [{t.low}, {t.high}] (target {t.target}; {t.source})"
            for t in TARGETS.values()
            if t.name in self.values and not t.holds(self.values[t.name])
        ]


def _truth_of(
    world: WorldConfig, stream: Stream, count: int, progress: Callable[[int, int], None] | None
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    vocab = default_vocabulary(world.version)
    if stream == Stream.PRETRAIN:
        generator = SceneGenerator(world.pretraining_scene)
    else:
        generator = SceneGenerator(world.scene)
    size = world.scene.image_size
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    truth = np.zeros((count, len(vocab)), dtype=bool)
    for i in range(count):
        if stream == Stream.PRETRAIN:
            scene = generator.scene(world.seed, int(stream), i)
        else:
            scene, _ = project_scene(world, generator, int(stream), i)
        images[i] = scene.image
        truth[i] = vocab.multi_hot(scene.labels) > 0
        if progress is not None and ((i + 1) % 256 == 0 or i + 1 == count):
            progress(i + 1, count)
    return images, truth


def measure_world(
    world: WorldConfig, images: int = 4000, progress: Callable[[int, int], None] | None = None
) -> WorldStats:
    """Generate ``images`` pool images (and as many pretraining images) and measure them.

    Co-occurrence is measured over the object labels, as COCO's labels are objects; colours and
    patterns follow from the objects (a zebra is always black, white and striped) and would
    inflate it.
    """
    vocab = default_vocabulary(world.version)
    pool_images, truth = _truth_of(world, Stream.TRAIN, images, progress)
    values = prevalence_curve(truth)
    objects = [i for i, k in enumerate(vocab.kinds) if k == LabelKind.OBJECT]
    median, pairs, top = cooccurrence_lift(truth[:, objects], [vocab.names[i] for i in objects])
    values["median_lift"] = median
    values["frequent_pairs"] = float(pairs)
    values["burst_share"] = near_duplicate_share(pool_images, truth)
    _, pre_truth = _truth_of(world, Stream.PRETRAIN, images, None)
    project_rank = np.argsort(np.argsort(-truth[:, objects].mean(axis=0)))
    pretrain_rank = np.argsort(np.argsort(-pre_truth[:, objects].mean(axis=0)))
    values["pretrain_rank_correlation"] = float(np.corrcoef(project_rank, pretrain_rank)[0, 1])
    pre = prevalence_curve(pre_truth[:, objects])
    values["pretrain_object_slope"] = pre["slope_ranks_1_50"]
    values["project_object_slope"] = prevalence_curve(truth[:, objects])["slope_ranks_1_50"]
    return WorldStats(world.version, images, values, top)
