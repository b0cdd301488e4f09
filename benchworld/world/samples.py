"""The sample images shipped in ``samples/`` for ``make demo``: a few world scenes as PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from benchworld.world.captions import make_captions
from benchworld.world.config import Stream, WorldConfig, world_config
from benchworld.world.draws import Draws
from benchworld.world.scenes import SceneGenerator
from benchworld.world.vocabulary import WORLD_V1, default_vocabulary

__all__ = ["write_samples"]


def write_samples(out_dir: Path, count: int = 8, world: WorldConfig | None = None) -> Path:
    """Write ``count`` scenes of the samples stream as ``world_00.png``... and ``labels.json``.

    ``labels.json`` maps each file name to its true labels (sorted) and holds the world version
    and each image's captions, so the demo can print predictions next to the truth.

    Args:
        out_dir: Destination folder (created if missing).
        count: Number of images.
        world: World configuration (default: world v1, whose images the committed samples are).

    Returns:
        The path of ``labels.json``.
    """
    # The demo's committed samples stay world v1's images (v2 changes the draws, not the labels).
    world = world or world_config(WORLD_V1)
    vocab = default_vocabulary(world.version)
    generator = SceneGenerator(world.scene)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[str]] = {}
    captions: dict[str, list[str]] = {}
    for i in range(count):
        draws = Draws(np.random.default_rng([world.seed, int(Stream.SAMPLES), i]))
        scene = generator.render(draws)
        name = f"world_{i:02d}.png"
        # No ancillary chunks (no time stamp): the same seed writes byte-identical files.
        Image.fromarray(scene.image).save(out_dir / name, optimize=False)
        labels[name] = sorted(scene.labels, key=vocab.index)
        captions[name] = [c.text for c in make_captions(scene, vocab, draws, world.captions)]
    path = out_dir / "labels.json"
    payload = {"version": vocab.version, "labels": labels, "captions": captions}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
