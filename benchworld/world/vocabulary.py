"""The benchmark world's label vocabulary: names, kinds, caption words and the seen/unseen split.

Four kinds of labels, all real words, chosen so that each kind can be learned by a tiny CLIP
trained from scratch within the pretraining budget (docs/benchmark.md): the reference
measurements found colour-, texture- and background-like labels learned within ~150k pairs and
shape-like labels not at all, so every object here is identified by its colours and surface
pattern (a zebra is black-and-white striped, a ladybug red with black dots), not by outline.

- ``object`` (34): animals, food and things; most have a fixed appearance, seven (balloon, flower,
  gift, kite, flag, towel, coin) vary in colour and/or pattern, which keeps colour and pattern
  labels from being mere unions of object labels.
- ``colour`` (11): the colours of the objects present (never of the background).
- ``pattern`` (8): the surface patterns of the objects present.
- ``scene`` (12): the background(s); an image shows one, or two split at a horizon.

The seen/unseen split (ML-ZSL, docs/method.md §8) holds out ~25% of each kind, so that every kind
is represented among the unseen labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "UNSEEN_FRACTION",
    "VOCABULARY_VERSION",
    "WORLD_V1",
    "WORLD_V2",
    "LabelKind",
    "LabelSpec",
    "Vocabulary",
    "default_vocabulary",
]

# Bump whenever anything that changes generated data changes: labels, synonyms, the split,
# rendering or captions. Datasets and checkpoints carry it, and loaders refuse a mismatch.
# World v2 keeps v1's labels and split and changes how images are drawn (benchworld.world.config);
# v1 stays reproducible by name.
WORLD_V1 = "world-v1"
WORLD_V2 = "world-v2"
VOCABULARY_VERSION = WORLD_V2

# NUS-WIDE holds out 81 of 1,006 labels (8%); the issue asks for ~25%, which gives enough unseen
# labels (16 of 65) for a ZSL mAP that is not dominated by one or two labels.
UNSEEN_FRACTION = 0.25

# Fixed seed of the seen/unseen draw; changing it changes the benchmark (bump the version).
_SPLIT_SEED = 20230207


class LabelKind(StrEnum):
    """The family a label belongs to."""

    OBJECT = "object"
    COLOUR = "colour"
    PATTERN = "pattern"
    SCENE = "scene"


@dataclass(frozen=True)
class LabelSpec:
    """One label and the words captions may use for it.

    Attributes:
        name: The label name (a real English word), used in prompts and annotations.
        kind: Its family.
        synonyms: Other words of the same part of speech that captions use for it (alt-text is
            not consistent); each maps back to this label only.
        plurals: Plural nouns of an object, the regular one first (empty for other kinds).
        nouns: Noun forms of a pattern ("stripes" for striped), the usual one first.
    """

    name: str
    kind: LabelKind
    synonyms: tuple[str, ...] = ()
    plurals: tuple[str, ...] = ()
    nouns: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        """Every word that names this label in a caption."""
        return tuple(dict.fromkeys((self.name, *self.synonyms, *self.plurals, *self.nouns)))


def _obj(name: str, plurals: str, synonyms: str = "") -> LabelSpec:
    return LabelSpec(name, LabelKind.OBJECT, tuple(synonyms.split()), tuple(plurals.split()))


def _lab(name: str, kind: LabelKind, *synonyms: str) -> LabelSpec:
    return LabelSpec(name, kind, tuple(synonyms))


def _pat(name: str, nouns: str, synonyms: str = "") -> LabelSpec:
    return LabelSpec(name, LabelKind.PATTERN, tuple(synonyms.split()), nouns=tuple(nouns.split()))


_C, _P, _S = LabelKind.COLOUR, LabelKind.PATTERN, LabelKind.SCENE

# A caption word must never name two labels: "orange" is only the colour (so the fruit is
# absent), and the sea is never "waves" (that word is the pattern wavy's noun).
_LABELS: tuple[LabelSpec, ...] = (
    # objects: animals
    _obj("zebra", "zebras"),
    _obj("tiger", "tigers"),
    _obj("giraffe", "giraffes"),
    _obj("leopard", "leopards"),
    _obj("ladybug", "ladybugs ladybirds", "ladybird"),
    _obj("bee", "bees bumblebees", "bumblebee"),
    _obj("panda", "pandas"),
    _obj("frog", "frogs"),
    _obj("flamingo", "flamingos"),
    _obj("crow", "crows ravens", "raven"),
    _obj("swan", "swans"),
    _obj("goldfish", "goldfish fish", "fish"),
    _obj("snake", "snakes"),
    # objects: food
    _obj("strawberry", "strawberries"),
    _obj("lemon", "lemons"),
    _obj("lime", "limes"),
    _obj("tomato", "tomatoes"),
    _obj("watermelon", "watermelons"),
    _obj("grape", "grapes"),
    _obj("blueberry", "blueberries"),
    _obj("cookie", "cookies biscuits", "biscuit"),
    _obj("egg", "eggs"),
    _obj("pizza", "pizzas"),
    _obj("broccoli", "broccoli"),
    _obj("carrot", "carrots"),
    # objects: things
    _obj("coin", "coins"),
    _obj("chessboard", "chessboards"),
    _obj("tire", "tires tyres", "tyre"),
    _obj("balloon", "balloons"),
    _obj("gift", "gifts presents", "present"),
    _obj("flower", "flowers blossoms", "blossom"),
    _obj("flag", "flags"),
    _obj("kite", "kites"),
    _obj("towel", "towels"),
    # colours
    _lab("red", _C),
    _lab("orange", _C),
    _lab("yellow", _C),
    _lab("green", _C),
    _lab("blue", _C),
    _lab("purple", _C, "violet"),
    _lab("pink", _C),
    _lab("brown", _C),
    _lab("black", _C),
    _lab("white", _C),
    _lab("gray", _C, "grey"),
    # patterns
    _pat("striped", "stripes", "stripy"),
    _pat("dotted", "dots", "polka"),
    _pat("spotted", "spots", "spotty"),
    _pat("checkered", "checks", "checked"),
    _pat("speckled", "speckles", "flecked"),
    _pat("zigzag", "zigzags", "chevron"),
    _pat("wavy", "waves", "squiggly"),
    _pat("plaid", "tartan"),
    # scenes (backgrounds)
    _lab("grass", _S, "grassy", "lawn", "meadow"),
    _lab("sand", _S, "sandy", "beach"),
    _lab("water", _S, "sea", "lake", "ocean"),
    _lab("snow", _S, "snowy"),
    _lab("sky", _S),
    _lab("brick", _S, "bricks"),
    _lab("wood", _S, "wooden"),
    _lab("gravel", _S, "pebbles"),
    _lab("carpet", _S, "rug"),
    _lab("tiles", _S, "tiled"),
    _lab("asphalt", _S, "road", "street"),
    _lab("mud", _S, "muddy"),
)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered label vocabulary with its kinds, caption words and seen/unseen split.

    Attributes:
        labels: The labels in their fixed order (the column order of every label matrix).
        unseen: Names of the labels held out of training annotations.
        version: Identifies the world (see ``VOCABULARY_VERSION``).
    """

    labels: tuple[LabelSpec, ...]
    unseen: frozenset[str]
    version: str = VOCABULARY_VERSION

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("duplicate label names in the vocabulary")
        if not self.unseen <= set(names):
            raise ValueError(f"unseen labels not in the vocabulary: {sorted(self.unseen - set(names))}")

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Label names in column order."""
        return tuple(spec.name for spec in self.labels)

    @cached_property
    def kinds(self) -> tuple[LabelKind, ...]:
        """The kind of each label, in column order."""
        return tuple(spec.kind for spec in self.labels)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, name: str) -> int:
        """Column of a label.

        Raises:
            KeyError: The name is not a label of this vocabulary.
        """
        return self._index[name]

    def spec(self, name: str) -> LabelSpec:
        """The spec of a label by name."""
        return self.labels[self._index[name]]

    def names_of(self, kind: LabelKind) -> tuple[str, ...]:
        """Names of the labels of one kind, in column order."""
        return tuple(spec.name for spec in self.labels if spec.kind == kind)

    @cached_property
    def seen_mask(self) -> NDArray[np.bool_]:
        """Boolean vector over columns: True for seen labels."""
        return np.array([name not in self.unseen for name in self.names], dtype=bool)

    @property
    def seen_names(self) -> tuple[str, ...]:
        """Seen label names, in column order."""
        return tuple(n for n in self.names if n not in self.unseen)

    @property
    def unseen_names(self) -> tuple[str, ...]:
        """Unseen label names, in column order."""
        return tuple(n for n in self.names if n in self.unseen)

    @cached_property
    def word_index(self) -> Mapping[str, str]:
        """Every caption word that names a label, mapped to that label's name."""
        index: dict[str, str] = {}
        for spec in self.labels:
            for word in spec.words:
                if index.setdefault(word, spec.name) != spec.name:
                    raise ValueError(f"caption word {word!r} names both {index[word]!r} and {spec.name!r}")
        return index

    def multi_hot(self, names: Iterable[str]) -> NDArray[np.uint8]:
        """A ``uint8`` 0/1 vector over columns with the given labels set."""
        vec = np.zeros(len(self), dtype=np.uint8)
        for name in names:
            vec[self._index[name]] = 1
        return vec

    @cached_property
    def fingerprint(self) -> str:
        """A short stable hash of the version, ordered names, kinds and split."""
        text = "|".join([self.version, *(f"{s.name}:{s.kind}" for s in self.labels), *sorted(self.unseen)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def choose_unseen(
    labels: tuple[LabelSpec, ...], fraction: float = UNSEEN_FRACTION, seed: int = _SPLIT_SEED
) -> frozenset[str]:
    """Draw the unseen labels: ``round(fraction * n)`` of each kind, with a fixed seed.

    Stratifying by kind keeps every family represented among the unseen labels (a plain draw of
    16 of 65 could leave out all 8 patterns).

    Args:
        labels: The vocabulary's labels.
        fraction: Share of each kind to hold out.
        seed: Seed of the draw.

    Returns:
        The names of the unseen labels.
    """
    rng = np.random.default_rng(seed)
    unseen: set[str] = set()
    for kind in LabelKind:
        names = [spec.name for spec in labels if spec.kind == kind]
        count = max(1, round(fraction * len(names)))
        for i in rng.permutation(len(names))[:count]:
            unseen.add(names[int(i)])
    return frozenset(unseen)


def default_vocabulary(version: str = VOCABULARY_VERSION) -> Vocabulary:
    """The benchmark world's vocabulary (65 labels, 16 unseen), of world ``version`` (default the latest)."""
    return Vocabulary(_LABELS, choose_unseen(_LABELS), version)
