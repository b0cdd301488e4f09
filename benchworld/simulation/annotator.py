"""A simulated annotator on the benchmark world: corrects pre-annotations from the ground truth.

The world (``benchworld.world``) knows every image's labels, so an annotator can be played
exactly: shown an image with the model's pre-annotated tags and the project's current options,
it ticks the true ones and removes the wrong ones. What it did becomes an
:class:`~assistant.corrections.AnnotatedImage`, the same record the Label Studio rounds build, so
the round core sees simulated and real corrections alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from assistant.corrections import AnnotatedImage
from assistant.errors import ConfigError
from benchworld.world.config import Stream, WorldConfig
from benchworld.world.project import project_scene
from benchworld.world.scenes import SceneGenerator
from benchworld.world.team import AnnotatorProfile
from benchworld.world.vocabulary import Vocabulary, default_vocabulary

__all__ = ["LabeledImages", "SimulatedAnnotator", "TeamAnnotator", "annotator_for", "render_labeled"]


@dataclass(frozen=True)
class LabeledImages:
    """World images with their complete ground truth.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB.
        truth: ``(N, L)`` bool over ``names``.
        names: The world's label names (columns of ``truth``).
        stream: The world stream they come from.
    """

    images: NDArray[np.uint8]
    truth: NDArray[np.bool_]
    names: tuple[str, ...]
    stream: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def targets(self, labels: Sequence[str]) -> NDArray[np.int8]:
        """Complete +1/-1 targets over ``labels`` (every label must be a world label)."""
        index = {n: i for i, n in enumerate(self.names)}
        cols = [index[n] for n in labels]
        return np.where(self.truth[:, cols], 1, -1).astype(np.int8)


def render_labeled(
    stream: Stream,
    count: int,
    world: WorldConfig | None = None,
    vocab: Vocabulary | None = None,
    *,
    first: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LabeledImages:
    """Images ``first .. first + count - 1`` of a world stream with complete labels.

    Unlike the benchmark's ``train`` split (whose unseen labels are 0), every label is known here:
    the simulated annotator must be able to tag labels the project adds later.
    """
    world = world or WorldConfig()
    vocab = vocab or default_vocabulary(world.version)
    generator = SceneGenerator(world.scene)
    size = world.scene.image_size
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    truth = np.zeros((count, len(vocab)), dtype=bool)
    for i in range(count):
        # The same image as benchworld.world.dataset.generate_split's image i of the stream.
        scene, _ = project_scene(world, generator, int(stream), first + i)
        images[i] = scene.image
        truth[i] = vocab.multi_hot(scene.labels) > 0
        if progress is not None and ((i + 1) % 256 == 0 or i + 1 == count):
            progress(i + 1, count)
    return LabeledImages(images, truth, vocab.names, int(stream))


class SimulatedAnnotator:
    """Corrects pre-annotations from the ground truth.

    Args:
        pool: The images it annotates, with their truth.
        miss_rate: Probability of leaving a true tag unticked (0: a perfect annotator).
        automation_bias: Probability of keeping a wrong tag that the pre-annotation showed
            (anchoring on the suggestion). Each one kept is a label error that pre-annotation
            introduced; :attr:`introduced_errors` counts them.
        seed: Seed of the misses and of the kept wrong tags (two independent streams, so a run
            without bias draws the same misses as before the bias existed).

    Attributes:
        introduced_errors: Wrong shown tags kept so far.
    """

    def __init__(
        self, pool: LabeledImages, *, miss_rate: float = 0.0, automation_bias: float = 0.0, seed: int = 0
    ) -> None:
        for name, rate in (("miss_rate", miss_rate), ("automation_bias", automation_bias)):
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{name}={rate} is not a probability", fix=f"use {name} in [0, 1]")
        self.pool = pool
        self.miss_rate = miss_rate
        self.automation_bias = automation_bias
        self.introduced_errors = 0
        self._rng = np.random.default_rng(seed)
        self._bias_rng = np.random.default_rng([seed, 1])
        self._index = {n: i for i, n in enumerate(pool.names)}

    def is_true(self, index: int, label: str) -> bool:
        """Whether pool image ``index`` shows ``label``."""
        return bool(self.pool.truth[index, self._index[label]])

    def annotate(self, index: int, options: Sequence[str], predicted: Sequence[str]) -> AnnotatedImage:
        """Annotate pool image ``index`` shown with ``options`` and the pre-annotated ``predicted`` tags.

        Returns:
            Positives: the true options (minus misses) plus the wrong shown tags it kept
            (automation bias); hard negatives: the shown tags it removed; ``shown``: the options.
        """
        truth = self.pool.truth[index]
        positives = {n for n in options if truth[self._index[n]]}
        if self.miss_rate > 0:
            positives = {n for n in positives if self._rng.random() >= self.miss_rate}
        if self.automation_bias > 0:
            # Sorted: the draws must not depend on set iteration order.
            wrong = sorted(n for n in predicted if n in options and not truth[self._index[n]])
            kept = {n for n in wrong if self._bias_rng.random() < self.automation_bias}
            self.introduced_errors += len(kept)
            positives |= kept
        removed = {n for n in predicted if n not in positives}
        return AnnotatedImage(
            key=str(index),
            item=f"world:{self.pool.stream}:{index}",
            positives=frozenset(positives),
            hard_negatives=frozenset(removed),
            shown=frozenset(options),
        )


class TeamAnnotator(SimulatedAnnotator):
    """World v2's annotators: a team of fallible people (``benchworld.world.team``), tasks dealt in turn.

    Each task is annotated by one member: each true option is missed with the member's
    ``miss_rate``, with its ``wrong_rate`` one false option nobody suggested is ticked, and each
    wrong shown tag is kept with its ``automation_bias``. Every task whose answer differs from the
    truth over its options is recorded in :attr:`corrupted`, so the label review is measured on the
    team's own mistakes, not on uniform flips.

    Args:
        pool: The images it annotates.
        team: The members' error rates.
        seed: Seed of every mistake.

    Attributes:
        corrupted: Task key -> ``("missing" | "wrong", tag)``: the first mistake of each wrong task
            (a missed tag first).
        by_member: Task key -> index of the member who annotated it.
    """

    def __init__(self, pool: LabeledImages, team: Sequence[AnnotatorProfile], *, seed: int = 0) -> None:
        if not team:
            raise ConfigError("an annotation team needs at least one member", fix="pass benchworld.world.team.V2_TEAM")
        for member in team:
            for name in ("miss_rate", "wrong_rate", "automation_bias"):
                rate = getattr(member, name)
                if not 0.0 <= rate <= 1.0:
                    raise ConfigError(f"{name}={rate} is not a probability", fix=f"use {name} in [0, 1]")
        super().__init__(pool, seed=seed)
        self.team = tuple(team)
        self._team_rng = np.random.default_rng([seed, 11])
        self._tasks = 0
        self.corrupted: dict[str, tuple[str, str]] = {}
        self.by_member: dict[str, int] = {}

    def annotate(self, index: int, options: Sequence[str], predicted: Sequence[str]) -> AnnotatedImage:
        """See :meth:`SimulatedAnnotator.annotate`; the member on duty makes their mistakes."""
        member_index = self._tasks % len(self.team)
        member = self.team[member_index]
        self._tasks += 1
        rng = self._team_rng
        truth = self.pool.truth[index]
        true = sorted(n for n in options if truth[self._index[n]])
        missed = [n for n in true if rng.random() < member.miss_rate]
        positives = set(true) - set(missed)
        # Sorted: the draws must not depend on set iteration order.
        wrong_shown = sorted(n for n in predicted if n in options and not truth[self._index[n]])
        kept = [n for n in wrong_shown if rng.random() < member.automation_bias]
        self.introduced_errors += len(kept)
        positives |= set(kept)
        added: list[str] = []
        if rng.random() < member.wrong_rate:
            suggested = set(predicted)
            absent = sorted(n for n in options if not truth[self._index[n]] and n not in suggested)
            if absent:
                added.append(str(rng.choice(absent)))
                positives |= set(added)
        key = str(index)
        self.by_member[key] = member_index
        if missed:
            self.corrupted[key] = ("missing", missed[0])
        elif kept or added:
            self.corrupted[key] = ("wrong", (kept or added)[0])
        removed = {n for n in predicted if n not in positives}
        return AnnotatedImage(
            key=key,
            item=f"world:{self.pool.stream}:{index}",
            positives=frozenset(positives),
            hard_negatives=frozenset(removed),
            shown=frozenset(options),
        )


def annotator_for(
    pool: LabeledImages, world: WorldConfig, *, miss_rate: float = 0.0, automation_bias: float = 0.0, seed: int = 0
) -> SimulatedAnnotator:
    """The world's annotator: its team when it has one (v2), else one annotator with the given rates (v1)."""
    if world.annotators:
        return TeamAnnotator(pool, world.annotators, seed=seed)
    return SimulatedAnnotator(pool, miss_rate=miss_rate, automation_bias=automation_bias, seed=seed)
