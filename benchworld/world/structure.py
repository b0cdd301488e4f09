"""World v2's structure: long-tailed label frequencies and context, each parameter with its source.

World v1 draws every object and background uniformly and independently of the scene. Real
labelling projects are long-tailed and contextual; the targets below are measured on
``../shared/datasets/coco128/labels.jsonl`` (256 images, 76 classes, 2.87 tags per image;
recomputed by ``tests/benchworld/world/test_structure.py`` when the file is present):

- rank-frequency: image prevalence 52% at rank 1, 10% at 2, 5.5% at 10, 3.9% at 20, 2.7% at 40,
  0.8% at 70; least-squares log-log slope -0.57 over ranks 1-50;
- co-occurrence: pairs seen in at least 3 of 256 images (1.2%) have a median lift of 5.0.

The world's parameters were fixed against these *world statistics* (``benchworld.world.stats``),
never against a learning result (docs/benchmark.md, "World v2").

- **Frequencies.** Objects and backgrounds are drawn with Zipf weights ``rank ** -a`` over a fixed,
  seeded rank order. The project streams and the web pretraining stream use different exponents
  and different rank orders: what is common on the web is not what is common in a team's project.
- **Context.** Every object has home backgrounds (goldfish in water, zebras on grass or sand) and
  partners (cookies with gifts, bees with flowers). An object's weight is multiplied by
  ``context`` when one of its homes is in the image and again when a partner is already in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from benchworld.world.appearance import OBJECT_STYLES
from benchworld.world.textures import SCENE_NAMES

__all__ = [
    "COCO128_TARGETS",
    "HOMES",
    "PARTNERS",
    "PRETRAIN_CONTEXT",
    "PRETRAIN_OBJECT_EXPONENT",
    "PROJECT_OBJECT_EXPONENT",
    "PROJECT_SCENE_EXPONENT",
    "V2_CONTEXT",
    "pretrain_object_weights",
    "project_object_weights",
    "project_scene_weights",
    "home_matrix",
    "partner_matrix",
    "zipf_weights",
]

# The real statistics the world is matched to (COCO128, computed as described above).
COCO128_TARGETS: Final[Mapping[str, float]] = {
    "images": 256,
    "classes": 76,
    "tags_per_image": 2.87,
    "top_prevalence": 0.523,
    "slope_ranks_1_50": -0.571,
    "median_lift_frequent_pairs": 5.02,
    "frequent_pair_min_share": 3 / 256,
}

# Zipf exponents, fixed by matching the world's measured rank-frequency curve over all 65 labels
# (objects, their colours and patterns, backgrounds) to COCO128's slope of -0.57 over ranks 1-50
# (within its bootstrap interval), with the most common label above 30% and the rarest near 1%
# (stats.prevalence_curve). Colours are shared by many objects and always common, which bends the
# all-label curve: an object exponent of 1.0 already gives -0.68, 0.9 gives -0.66 with the rarest
# label at 1.5%. Backgrounds stay uniform (steeper scene weights only steepen the curve).
PROJECT_OBJECT_EXPONENT: Final = 0.9
PROJECT_SCENE_EXPONENT: Final = 0.0
# Web alt-text covers many subjects more evenly than one project does (a flatter curve) and in
# another order (its own seed).
PRETRAIN_OBJECT_EXPONENT: Final = 0.5
# Context strength: the weight multiplier for an object whose home background is in the image,
# and again for one whose partner is already in it; fixed by matching the median lift of frequent
# object pairs (stats.cooccurrence_lift) to COCO128's 5.0 (30 gives 5.2 on 2,500 images).
V2_CONTEXT: Final = 30.0
# The web stream's context (fixed before the project's was matched; the shipped model was
# pretrained with it).
PRETRAIN_CONTEXT: Final = 40.0

_PROJECT_ORDER_SEED: Final = 170_001
_PRETRAIN_ORDER_SEED: Final = 170_002
_SCENE_ORDER_SEED: Final = 170_003

# Where each object is usually photographed.
HOMES: Final[Mapping[str, tuple[str, ...]]] = {
    "zebra": ("grass", "sand"),
    "tiger": ("grass", "mud"),
    "giraffe": ("grass", "sand"),
    "leopard": ("grass", "gravel"),
    "ladybug": ("grass",),
    "bee": ("grass", "sky"),
    "panda": ("grass", "snow"),
    "frog": ("water", "mud"),
    "flamingo": ("water", "sand"),
    "crow": ("sky", "asphalt", "snow"),
    "swan": ("water",),
    "goldfish": ("water",),
    "snake": ("sand", "gravel"),
    "strawberry": ("wood", "tiles"),
    "lemon": ("wood", "tiles"),
    "lime": ("wood", "tiles"),
    "tomato": ("wood", "tiles"),
    "watermelon": ("wood", "sand"),
    "grape": ("wood", "tiles"),
    "blueberry": ("wood", "tiles"),
    "cookie": ("wood", "carpet"),
    "egg": ("wood", "tiles"),
    "pizza": ("wood", "tiles"),
    "broccoli": ("wood", "tiles"),
    "carrot": ("wood", "mud"),
    "coin": ("asphalt", "wood"),
    "chessboard": ("wood", "carpet"),
    "tire": ("asphalt", "mud", "gravel"),
    "balloon": ("sky", "carpet"),
    "gift": ("carpet", "wood"),
    "flower": ("grass",),
    "flag": ("sky",),
    "kite": ("sky", "sand"),
    "towel": ("sand", "tiles"),
}

# Things photographed together (symmetric groups).
PARTNERS: Final[tuple[tuple[str, ...], ...]] = (
    ("cookie", "gift", "balloon"),
    ("lemon", "lime"),
    ("strawberry", "blueberry", "grape"),
    ("tomato", "broccoli", "carrot"),
    ("pizza", "tomato"),
    ("egg", "cookie"),
    ("zebra", "giraffe"),
    ("bee", "flower"),
    ("ladybug", "flower"),
    ("swan", "goldfish", "frog"),
    ("kite", "flag"),
    ("towel", "watermelon"),
    ("chessboard", "coin"),
    ("flamingo", "swan"),
)


def zipf_weights(count: int, exponent: float, order_seed: int) -> tuple[float, ...]:
    """Normalised weights ``rank ** -exponent``, ranks assigned by a seeded permutation.

    Args:
        count: Number of items (in their fixed order).
        exponent: Zipf exponent (0: uniform).
        order_seed: Seed of the permutation that decides which item gets which rank.

    Returns:
        One weight per item, in item order, summing to 1.
    """
    ranks = np.empty(count, dtype=np.float64)
    ranks[np.random.default_rng(order_seed).permutation(count)] = np.arange(1, count + 1)
    weights = ranks**-exponent
    return tuple(float(w) for w in weights / weights.sum())


def project_object_weights() -> tuple[float, ...]:
    """The project streams' object weights, in ``OBJECT_STYLES`` order."""
    return zipf_weights(len(OBJECT_STYLES), PROJECT_OBJECT_EXPONENT, _PROJECT_ORDER_SEED)


def pretrain_object_weights() -> tuple[float, ...]:
    """The pretraining stream's object weights: flatter, in another rank order."""
    return zipf_weights(len(OBJECT_STYLES), PRETRAIN_OBJECT_EXPONENT, _PRETRAIN_ORDER_SEED)


def project_scene_weights() -> tuple[float, ...]:
    """The project streams' background weights, in ``SCENE_NAMES`` order."""
    return zipf_weights(len(SCENE_NAMES), PROJECT_SCENE_EXPONENT, _SCENE_ORDER_SEED)


def home_matrix(objects: Sequence[str], scenes: Sequence[str]) -> NDArray[np.bool_]:
    """``(objects, scenes)`` bool: True where the scene is one of the object's homes."""
    return np.array([[s in HOMES.get(o, ()) for s in scenes] for o in objects], dtype=bool)


def partner_matrix(objects: Sequence[str]) -> NDArray[np.bool_]:
    """``(objects, objects)`` bool: True where two objects are partners (never on the diagonal)."""
    index = {o: i for i, o in enumerate(objects)}
    out = np.zeros((len(objects), len(objects)), dtype=bool)
    for group in PARTNERS:
        for a in group:
            for b in group:
                if a != b:
                    out[index[a], index[b]] = True
    return out
