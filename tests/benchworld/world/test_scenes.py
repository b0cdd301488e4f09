"""The scene generator: determinism, image format, object counts, sizes and visibility."""

from __future__ import annotations

import numpy as np
import pytest

from benchworld.world.appearance import COLOURS
from benchworld.world.scenes import Scene, SceneConfig, SceneGenerator
from benchworld.world.vocabulary import LabelKind, default_vocabulary


@pytest.fixture(scope="module")
def generator() -> SceneGenerator:
    return SceneGenerator()


@pytest.fixture(scope="module")
def scenes(generator: SceneGenerator) -> list[Scene]:
    return [generator.scene(0, 9, i) for i in range(300)]


def test_same_seed_gives_identical_scenes(generator: SceneGenerator) -> None:
    again = SceneGenerator()  # a fresh generator rebuilds its texture bank
    for i in range(5):
        a, b = generator.scene(3, 1, i), again.scene(3, 1, i)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.objects == b.objects and a.backgrounds == b.backgrounds


def test_different_indices_and_seeds_differ(generator: SceneGenerator) -> None:
    base = generator.scene(3, 1, 0).image
    assert not np.array_equal(base, generator.scene(3, 1, 1).image)
    assert not np.array_equal(base, generator.scene(4, 1, 0).image)
    assert not np.array_equal(base, generator.scene(3, 2, 0).image)


@pytest.mark.parametrize("size", [64, 96])
def test_image_format(size: int) -> None:
    scene = SceneGenerator(SceneConfig(image_size=size)).scene(0, 0, 7)
    assert scene.image.shape == (size, size, 3)
    assert scene.image.dtype == np.uint8


def test_one_to_five_objects_on_one_or_two_backgrounds(scenes: list[Scene]) -> None:
    counts = [len(s.objects) for s in scenes]
    assert min(counts) >= 1 and max(counts) == 5
    assert {len(s.backgrounds) for s in scenes} == {1, 2}
    assert 0.2 < np.mean([len(s.backgrounds) == 2 for s in scenes]) < 0.5


def test_small_objects_exist(scenes: list[Scene]) -> None:
    radii = np.array([o.radius for s in scenes for o in s.objects])
    pixels = np.array([o.pixels for s in scenes for o in s.objects])
    # radius <= 6 px at 64 px: the object fits in about one 8-px patch
    assert (radii <= 6).mean() > 0.15
    assert (pixels < 64).mean() > 0.1
    assert radii.max() > 15


def test_labels_cover_every_kind_and_match_objects(scenes: list[Scene]) -> None:
    vocab = default_vocabulary()
    kinds = dict(zip(vocab.names, vocab.kinds, strict=True))
    for scene in scenes:
        found = {kinds[name] for name in scene.labels}
        assert {LabelKind.OBJECT, LabelKind.COLOUR, LabelKind.SCENE} <= found
        assert {o.name for o in scene.objects} == {n for n in scene.labels if kinds[n] == LabelKind.OBJECT}


def test_every_annotated_object_is_visible(scenes: list[Scene]) -> None:
    for scene in scenes:
        for obj in scene.objects:
            assert obj.pixels >= 3, obj  # >= half of its >= 6 drawn pixels stays visible


def test_colour_labels_match_the_pixels(scenes: list[Scene]) -> None:
    # The topmost object, when plain and accent-free at its centre, shows its colour label there
    # (within the jitter: +-15% brightness, sd 10 per channel, +-12% lighting, 8% shading).
    plain = {"lemon", "lime", "tomato", "egg", "balloon", "flamingo", "blueberry", "carrot"}
    checked = 0
    for scene in scenes:
        top = scene.objects[-1]
        if top.name not in plain or top.pattern is not None:
            continue
        y, x = (min(63, max(0, int(c))) for c in top.centre)
        distance = np.linalg.norm(scene.image[y, x].astype(float) - np.asarray(COLOURS[top.colours[0]], dtype=float))
        assert distance < 90, (top, scene.image[y, x])
        checked += 1
    assert checked >= 5
