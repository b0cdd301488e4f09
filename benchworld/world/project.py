"""Project images: image ``i`` of a project stream, with world v2's photo series and camera.

The one place that turns ``(world, stream, index)`` into a project image, used by the benchmark
splits (``dataset``) and the simulations (``simulation.annotator``) alike, so both see the same
images. In world v1 it is exactly the old scene render (no bursts, no camera).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from benchworld.world.camera import apply_camera
from benchworld.world.config import BurstConfig, Stream, WorldConfig
from benchworld.world.draws import Draws
from benchworld.world.scenes import Scene, SceneGenerator

__all__ = ["burst_of", "project_scene"]

# Sub-seeds of an image's side streams (never used by the scene itself, so scenes stay the same).
_BURST_DRAW = 101
_RESHOOT_DRAW = 102
_CAMERA_DRAW = 103


def burst_of(world: WorldConfig, stream: int, index: int) -> int | None:
    """The first index of the burst that image ``index`` belongs to, or ``None`` when it is a single shot."""
    bursts = world.bursts
    if stream != Stream.TRAIN or bursts.share <= 0 or bursts.size < 2:
        return None
    group = index // bursts.size
    if np.random.default_rng([world.seed, stream, group, _BURST_DRAW]).random() >= bursts.share:
        return None
    return group * bursts.size


def project_scene(world: WorldConfig, generator: SceneGenerator, stream: int, index: int) -> tuple[Scene, Draws]:
    """Image ``index`` of a project stream and its randomness (captions continue from it).

    Args:
        world: The world.
        generator: A generator built with ``world.scene``.
        stream: The stream (``train``, ``val``, ``test`` or ``samples``).
        index: The image's index in the stream.

    Returns:
        The scene (its image re-shot for a burst member and seen through the project camera) and
        the scene's draws.
    """
    leader = burst_of(world, stream, index)
    draws = Draws(np.random.default_rng([world.seed, stream, index if leader is None else leader]))
    scene = generator.render(draws)
    if leader is not None and index != leader:
        reshoot = Draws(np.random.default_rng([world.seed, stream, index, _RESHOOT_DRAW]))
        scene = replace(scene, image=_reshoot(scene.image, world.bursts, reshoot))
    if world.camera is not None and stream in (Stream.TRAIN, Stream.VAL, Stream.TEST):
        camera = Draws(np.random.default_rng([world.seed, stream, index, _CAMERA_DRAW]))
        scene = replace(scene, image=apply_camera(scene.image, world.camera, camera))
    return scene, draws


def _reshoot(image: NDArray[np.uint8], bursts: BurstConfig, draws: Draws) -> NDArray[np.uint8]:
    """The same scene shot again a moment later: re-framed by a few pixels, another exposure."""
    size = image.shape[0]
    pad = bursts.max_shift
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = draws.integer(2 * pad + 1), draws.integer(2 * pad + 1)
    shifted = padded[dy : dy + size, dx : dx + size].astype(np.float32) * np.float32(draws.uniform(*bursts.gain))
    return np.clip(shifted + 0.5, 0, 255).astype(np.uint8)
