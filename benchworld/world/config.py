"""The world's configuration: scene and caption settings, the seed, split sizes and stream ids.

Two world versions exist. ``world-v2`` (the default) has the structure of real labelling projects:
long-tailed labels with context (``structure``), photo series (``BurstConfig``), a project camera
(``camera``) and, in the simulations, fallible annotators. ``world-v1`` (uniform, independent,
one distribution, perfect annotators) stays reproducible by name: ``world_config("world-v1")``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Final

from assistant.errors import ConfigError
from benchworld.world.camera import CameraConfig
from benchworld.world.captions import CaptionConfig
from benchworld.world.scenes import SceneConfig
from benchworld.world.structure import (
    PRETRAIN_CONTEXT,
    V2_CONTEXT,
    pretrain_object_weights,
    project_object_weights,
    project_scene_weights,
)
from benchworld.world.team import V2_TEAM, AnnotatorProfile
from benchworld.world.vocabulary import VOCABULARY_VERSION, WORLD_V1, WORLD_V2

__all__ = [
    "FULL_SIZES",
    "QUICK_SIZES",
    "WORLD_VERSIONS",
    "BurstConfig",
    "SplitSizes",
    "Stream",
    "WorldConfig",
    "world_config",
]

WORLD_VERSIONS: Final = (WORLD_V1, WORLD_V2)


class Stream(IntEnum):
    """Independent image streams of one world; image ``i`` of a stream is seeded ``(seed, stream, i)``.

    Distinct streams never share a seed, so no test image is a pretraining or training image.
    """

    PRETRAIN = 0
    TRAIN = 1
    VAL = 2
    TEST = 3
    SAMPLES = 4


@dataclass(frozen=True)
class SplitSizes:
    """Image counts of the multi-label splits."""

    train: int
    val: int
    test: int


# 20k training images are ~100 s per MKT stage-1 epoch at the measured ~200 img/s; 6,000 test
# images keep 1-2 mAP differences on 16 unseen labels above noise (benchmark-notes.md asks >= 5,000).
FULL_SIZES = SplitSizes(train=20_000, val=2_000, test=6_000)
QUICK_SIZES = SplitSizes(train=2_000, val=500, test=1_000)


@dataclass(frozen=True)
class BurstConfig:
    """Photo series in the labelling pool (the ``train`` stream): bursts of near-duplicates.

    The stream is cut into consecutive groups of ``size`` images; a group is a burst with
    probability ``share``, and then every image in it is the group's first scene re-shot: shifted
    by up to ``max_shift`` pixels, with its own exposure (``gain``). Real collections are redundant
    (10% or more of CIFAR-10 and ImageNet can be dropped at no loss, arXiv 1901.11409); a share of
    0.25 in bursts of 4 makes 19% of the pool redundant copies. Validation and test images stay
    independent, so that intervals are not narrowed by duplicates.

    Attributes:
        share: Share of pool images that belong to a burst (0: none, world v1).
        size: Images per burst.
        max_shift: Largest re-framing shift in pixels.
        gain: Range of each shot's exposure gain.
    """

    share: float = 0.25
    size: int = 4
    max_shift: int = 3
    gain: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines the generated data. The default is world v2.

    Attributes:
        seed: Base seed of every stream.
        scene: Scene composition of the project streams (train, val, test).
        captions: Caption mix.
        version: The world version (``WORLD_VERSIONS``).
        pretrain_scene: Scene composition of the web pretraining stream (its own frequencies);
            ``None`` uses ``scene``.
        bursts: Photo series in the labelling pool (share 0 disables).
        camera: The project camera (``None``: project images look like pretraining images).
        annotators: The annotation team (``team.V2_TEAM``); empty: one perfect annotator (v1).
    """

    seed: int = 0
    scene: SceneConfig = field(
        default_factory=lambda: SceneConfig(
            object_weights=project_object_weights(), scene_weights=project_scene_weights(), context=V2_CONTEXT
        )
    )
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    version: str = VOCABULARY_VERSION
    pretrain_scene: SceneConfig | None = field(
        default_factory=lambda: SceneConfig(object_weights=pretrain_object_weights(), context=PRETRAIN_CONTEXT)
    )
    bursts: BurstConfig = field(default_factory=BurstConfig)
    camera: CameraConfig | None = field(default_factory=CameraConfig)
    annotators: tuple[AnnotatorProfile, ...] = V2_TEAM

    @property
    def pretraining_scene(self) -> SceneConfig:
        """The scene composition of the pretraining stream."""
        return self.pretrain_scene or self.scene

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the version."""
        doc = asdict(self)
        if self.version == WORLD_V1:
            # v1's documents (and the hashes of its data) predate the v2 fields.
            for key in ("pretrain_scene", "bursts", "camera", "annotators"):
                doc.pop(key)
            for key in ("object_weights", "scene_weights", "context"):
                doc["scene"].pop(key)
        doc.pop("version")
        return {"version": self.version, **doc}

    def without_camera(self) -> WorldConfig:
        """The same world seen without the project camera (to measure the shift gap)."""
        from dataclasses import replace

        return replace(self, camera=None)


def world_config(version: str = VOCABULARY_VERSION, seed: int = 0) -> WorldConfig:
    """The world of a version by name.

    Raises:
        ConfigError: The version is unknown.
    """
    if version == WORLD_V2:
        return WorldConfig(seed=seed)
    if version == WORLD_V1:
        return WorldConfig(
            seed=seed,
            scene=SceneConfig(),
            version=WORLD_V1,
            pretrain_scene=None,
            bursts=BurstConfig(share=0.0),
            camera=None,
            annotators=(),
        )
    raise ConfigError(f"unknown world version {version!r}", fix=f"use one of {', '.join(WORLD_VERSIONS)}")
