"""The ML-ZSL splits: target encoding, coverage, save/load with hash checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import DataError
from benchworld.world.config import SplitSizes, Stream, WorldConfig, world_config
from benchworld.world.dataset import MultiLabelSplit, build_world, generate_split, load_split, load_world, save_split
from benchworld.world.project import project_scene
from benchworld.world.scenes import SceneGenerator
from benchworld.world.vocabulary import default_vocabulary


@pytest.fixture(scope="module")
def train() -> MultiLabelSplit:
    return generate_split("train", 120)


@pytest.fixture(scope="module")
def test_split() -> MultiLabelSplit:
    return generate_split("test", 700)


def test_train_targets_hide_unseen_labels(train: MultiLabelSplit) -> None:
    assert train.targets.dtype == np.int8
    assert np.all(train.targets[:, ~train.seen] == 0)
    assert set(np.unique(train.targets[:, train.seen])) == {-1, 1}
    assert train.captions == ((),) * len(train)


def test_training_images_show_unseen_content_without_annotating_it(train: MultiLabelSplit) -> None:
    # NUS-WIDE's protocol: unseen concepts are in training images, only not annotated.
    world = WorldConfig()
    vocab, generator = default_vocabulary(), SceneGenerator(world.scene)
    with_unseen = 0
    for i in range(20):
        scene, _ = project_scene(world, generator, int(Stream.TRAIN), i)
        assert np.array_equal(scene.image, train.images[i])
        truth = vocab.multi_hot(scene.labels)[vocab.seen_mask]
        np.testing.assert_array_equal(train.targets[i, vocab.seen_mask], np.where(truth > 0, 1, -1))
        with_unseen += bool(scene.labels & vocab.unseen)
    assert with_unseen >= 5


def test_test_targets_are_complete(test_split: MultiLabelSplit) -> None:
    assert set(np.unique(test_split.targets)) == {-1, 1}
    positives = (test_split.targets == 1).sum(axis=0)
    unseen = [n for n, s in zip(test_split.label_names, test_split.seen, strict=True) if not s]
    missing = [
        n for n, p, s in zip(test_split.label_names, positives, test_split.seen, strict=True) if not s and p == 0
    ]
    assert unseen and not missing
    assert all(len(c) == 4 for c in test_split.captions)


def test_splits_are_deterministic_and_distinct(train: MultiLabelSplit) -> None:
    again = generate_split("train", 120)
    assert again.data_hash == train.data_hash
    assert not np.array_equal(generate_split("val", 5).images, train.images[:5])


def test_save_load_roundtrip(tmp_path: Path, train: MultiLabelSplit) -> None:
    path = tmp_path / "train.npz"
    save_split(train, path)
    loaded = load_split(path)
    assert loaded.data_hash == train.data_hash
    np.testing.assert_array_equal(loaded.images, train.images)
    np.testing.assert_array_equal(loaded.targets, train.targets)
    assert loaded.label_names == default_vocabulary().names


def test_tampered_file_is_rejected(tmp_path: Path, train: MultiLabelSplit) -> None:
    flipped = train.targets.copy()
    col = int(np.flatnonzero(train.seen)[0])  # an unseen column is 0, which a flip leaves as is
    flipped[0, col] = -flipped[0, col]
    tampered = MultiLabelSplit(
        train.name, train.images, flipped, train.label_names, train.seen, train.captions, train.version, train.data_hash
    )
    save_split(tampered, tmp_path / "bad.npz")
    with pytest.raises(DataError, match="data hash"):
        load_split(tmp_path / "bad.npz")


def test_other_world_version_is_rejected(tmp_path: Path, train: MultiLabelSplit) -> None:
    save_split(train, tmp_path / "train.npz")
    with pytest.raises(DataError, match="world-v2"):
        load_split(tmp_path / "train.npz", version="world-v1")


def test_world_v1_stays_reproducible_by_name() -> None:
    # v1's images are the plain scene renders of before v2 (no long tail, bursts or camera), so
    # its published figures can be re-run.
    v1 = world_config("world-v1")
    split = generate_split("train", 12, v1)
    generator = SceneGenerator()
    for i in range(12):
        assert np.array_equal(generator.scene(0, int(Stream.TRAIN), i).image, split.images[i])
    assert split.version == "world-v1"
    assert set(v1.to_dict()) == {"version", "seed", "scene", "captions"}
    assert not np.array_equal(generate_split("train", 12).images, split.images)


def test_missing_file_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="assistant world build"):
        load_split(tmp_path / "nope.npz")


def test_build_and_load_world(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    paths = build_world(tmp_path, sizes=SplitSizes(train=20, val=10, test=30), progress=lambda *a: calls.append(a))
    assert set(paths) == {"train", "val", "test"}
    splits = load_world(tmp_path)
    assert [len(splits[n]) for n in ("train", "val", "test")] == [20, 10, 30]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["data_hashes"]["test"] == splits["test"].data_hash
    assert sum(not row["seen"] for row in manifest["labels"]) == len(default_vocabulary().unseen)
    assert calls[-1] == ("test", 30, 30)


def test_data_hash_does_not_depend_on_the_process(train: MultiLabelSplit) -> None:
    # Set iteration order changes with PYTHONHASHSEED; generation must not depend on it.
    code = "from benchworld.world.dataset import generate_split; print(generate_split('train', 120).data_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == train.data_hash
