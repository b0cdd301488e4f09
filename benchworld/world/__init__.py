"""The offline benchmark world: a synthetic captioned image world with an ML-ZSL split.

No pretrained CLIP weights can be downloaded here, so the project pretrains a tiny open_clip
model on this world (a stand-in for web-scale image-text pretraining) and measures MKT against
the frozen model on held-out (unseen) labels. See docs/benchmark.md.

- :mod:`~benchworld.world.vocabulary`: 65 labels of four kinds and the fixed seen/unseen split.
- :mod:`~benchworld.world.scenes`: the deterministic scene generator.
- :mod:`~benchworld.world.captions`: alt-text-like captions.
- :mod:`~benchworld.world.stream`: the pretraining stream of image-caption batches.
- :mod:`~benchworld.world.dataset`: the train/val/test multi-label splits on disk.
"""

from __future__ import annotations

from benchworld.world.captions import Caption, CaptionConfig, make_captions
from benchworld.world.config import FULL_SIZES, QUICK_SIZES, SplitSizes, Stream, WorldConfig
from benchworld.world.dataset import MultiLabelSplit, build_world, generate_split, load_split, load_world, save_split
from benchworld.world.draws import Draws
from benchworld.world.samples import write_samples
from benchworld.world.scenes import PlacedObject, Scene, SceneConfig, SceneGenerator
from benchworld.world.stream import PretrainBatch, PretrainBatches, PretrainStream
from benchworld.world.tokens import CaptionTokenizer
from benchworld.world.vocabulary import (
    UNSEEN_FRACTION,
    VOCABULARY_VERSION,
    LabelKind,
    LabelSpec,
    Vocabulary,
    default_vocabulary,
)

__all__ = [
    "FULL_SIZES",
    "QUICK_SIZES",
    "UNSEEN_FRACTION",
    "VOCABULARY_VERSION",
    "Caption",
    "CaptionConfig",
    "CaptionTokenizer",
    "Draws",
    "LabelKind",
    "LabelSpec",
    "MultiLabelSplit",
    "PlacedObject",
    "PretrainBatch",
    "PretrainBatches",
    "PretrainStream",
    "Scene",
    "SceneConfig",
    "SceneGenerator",
    "SplitSizes",
    "Stream",
    "Vocabulary",
    "WorldConfig",
    "build_world",
    "default_vocabulary",
    "generate_split",
    "load_split",
    "load_world",
    "make_captions",
    "save_split",
    "write_samples",
]
