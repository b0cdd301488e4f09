"""The pretraining stream: image-caption batches over ALL labels, generated on the fly.

Batch ``k`` holds images ``k * B ... (k + 1) * B - 1`` of the pretraining stream, each with one
caption, tokenised. Batches are pure functions of their index, so a ``DataLoader`` can fetch them
in worker processes (``batch_size=None``) and a resumed run sees the same data.

**Counterfactual twins.** By default 30% of a batch's slots hold *twin pairs*: two renders of the
same scene in which one variable object (a balloon, gift, kite, towel, flag, flower or coin) has
another colour or pattern, captioned alike but for that word ("a striped towel" / "a dotted
towel"). They are the mixed hard negatives the reference notes call for: a pattern word rarely
separates two captions of a batch, while within a twin pair nothing else does. Measured
(docs/benchmark.md): with twins and colour-paired captions, colours gained 5-10 mAP at 102k
pairs, but pattern words were still not separated (prompt cosine 0.98). The web analogue is
the product photo: the same shirt in five colourways, each with its own alt-text. About half the
scenes hold no variable object; their twin slots are filled with ordinary pairs.

Cost at 64 px (measured in docs/benchmark.md): ~1-2 ms per image-caption pair on one core, so
a batch of 256 takes ~0.3-0.5 s of one core against ~3 s for an fp32 training step on both
cores; one loader worker keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from benchworld.world.appearance import OBJECT_STYLES, ObjectInstance, variant
from benchworld.world.captions import make_captions, twin_caption
from benchworld.world.config import Stream, WorldConfig
from benchworld.world.draws import Draws
from benchworld.world.scenes import Scene, SceneGenerator
from benchworld.world.tokens import CaptionTokenizer
from benchworld.world.vocabulary import Vocabulary, default_vocabulary

__all__ = ["PretrainBatch", "PretrainBatches", "PretrainStream"]

_Pair = tuple[NDArray[np.uint8], str, frozenset[str]]


@dataclass(frozen=True)
class PretrainBatch:
    """One batch of image-caption pairs.

    Attributes:
        images: ``(B, S, S, 3)`` uint8 RGB.
        tokens: ``(B, context_length)`` int64 caption token ids.
        captions: The caption texts.
        labels: ``(B, L)`` uint8 multi-hot ground truth over all labels (for diagnostics; the
            contrastive objective never sees it).
    """

    images: NDArray[np.uint8]
    tokens: NDArray[np.int64]
    captions: tuple[str, ...]
    labels: NDArray[np.uint8]


class PretrainStream:
    """Deterministic image-caption batches for contrastive pretraining.

    Args:
        world: The world configuration (its seed selects the stream).
        batch_size: Pairs per batch.
        context_length: Token ids per caption (the text tower's context).
        vocab: Label vocabulary (default: :func:`default_vocabulary`).
        twin_share: Share of each batch's slots given to counterfactual twin pairs (0 disables).
    """

    def __init__(
        self,
        world: WorldConfig,
        batch_size: int = 256,
        context_length: int = 32,
        vocab: Vocabulary | None = None,
        twin_share: float = 0.3,
    ) -> None:
        self.world = world
        self.batch_size = batch_size
        self.vocab = vocab or default_vocabulary(world.version)
        self.tokenizer = CaptionTokenizer(context_length)
        self.twin_pairs = round(twin_share * batch_size / 2)
        # The web's own frequencies; never the project camera (pretraining never saw it).
        self._generator = SceneGenerator(world.pretraining_scene)

    def _draws(self, index: int, *sub: int) -> Draws:
        return Draws(np.random.default_rng([self.world.seed, int(Stream.PRETRAIN), index, *sub]))

    def pair(self, index: int) -> _Pair:
        """Image ``index`` of the stream with one caption and its label set."""
        draws = self._draws(index)
        scene = self._generator.render(draws)
        (caption,) = make_captions(scene, self.vocab, draws, self.world.captions, count=1)
        return scene.image, caption.text, scene.labels

    def twins(self, index: int) -> tuple[_Pair, _Pair] | None:
        """Image ``index`` and its counterfactual twin, or ``None`` if it has nothing to vary."""
        chooser = self._draws(index, 1)
        first = "pattern" if chooser.random() < 0.5 else "colour"
        changed: list[str] = []

        def edit(instances: list[ObjectInstance]) -> list[ObjectInstance]:
            for attribute in (first, "colour" if first == "pattern" else "pattern"):
                options = [k for k, inst in enumerate(instances) if _varies(inst.name, attribute)]
                if options:
                    k = chooser.choice(options)
                    new = variant(instances[k], chooser, attribute)
                    if new is not None:
                        changed.append(attribute)
                        return [*instances[:k], new, *instances[k + 1 :]]
            return instances

        original = self._generator.render(self._draws(index))
        twin = self._generator.render(self._draws(index), edit)
        diff = _difference(original, twin)
        if not changed or diff is None:
            return None
        pairs = []
        for scene, obj in ((original, original.objects[diff]), (twin, twin.objects[diff])):
            caption = twin_caption(obj, changed[0], self.vocab, self._draws(index, 2))
            pairs.append((scene.image, caption.text, scene.labels))
        return pairs[0], pairs[1]

    def batch(self, index: int) -> PretrainBatch:
        """Batch ``index`` (images ``index * batch_size`` onwards)."""
        start = index * self.batch_size
        pairs: list[_Pair] = []
        for j in range(self.twin_pairs):
            twins = self.twins(start + 2 * j)
            pairs.extend(twins if twins is not None else (self.pair(start + 2 * j), self.pair(start + 2 * j + 1)))
        pairs.extend(self.pair(start + i) for i in range(2 * self.twin_pairs, self.batch_size))
        captions = tuple(text for _, text, _ in pairs)
        labels = np.stack([self.vocab.multi_hot(names) for _, _, names in pairs])
        return PretrainBatch(np.stack([img for img, _, _ in pairs]), self.tokenizer(captions), captions, labels)


def _varies(name: str, attribute: str) -> bool:
    style = OBJECT_STYLES[name]
    if attribute == "colour":
        return len(style.body) > 1
    return len(style.pattern) > 1 and name != "flag"


def _difference(a: Scene, b: Scene) -> int | None:
    """Index of the one object whose colour or pattern differs (objects are placed alike)."""
    if len(a.objects) != len(b.objects):
        return None
    diffs = [i for i, (x, y) in enumerate(zip(a.objects, b.objects, strict=True)) if x != y]
    return diffs[0] if len(diffs) == 1 else None


class PretrainBatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Map-style view of a stream for ``DataLoader(..., batch_size=None, num_workers=1)``.

    Item ``k`` is batch ``first + k`` as ``(images (B, 3, S, S) uint8, tokens (B, T) int64)``.

    Args:
        stream: The stream.
        count: Number of batches.
        first: Index of the first batch (to resume a run).
    """

    def __init__(self, stream: PretrainStream, count: int, first: int = 0) -> None:
        self.stream, self.count, self.first = stream, count, first

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < self.count:
            raise IndexError(k)
        batch = self.stream.batch(self.first + k)
        images = torch.from_numpy(batch.images).permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(batch.tokens)
