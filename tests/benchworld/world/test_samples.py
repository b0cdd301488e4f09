"""The committed sample images are exactly what the current world generates."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from benchworld.world.samples import write_samples
from benchworld.world.vocabulary import WORLD_V1

REPO_SAMPLES = Path(__file__).resolve().parents[3] / "samples"


def test_write_samples(tmp_path: Path) -> None:
    path = write_samples(tmp_path, count=3)
    payload = json.loads(path.read_text())
    assert payload["version"] == WORLD_V1  # the demo's samples are world v1's images
    assert sorted(payload["labels"]) == ["world_00.png", "world_01.png", "world_02.png"]
    with Image.open(tmp_path / "world_00.png") as img:
        assert img.size == (64, 64) and img.mode == "RGB"


def test_committed_samples_are_current(tmp_path: Path) -> None:
    write_samples(tmp_path)
    committed = json.loads((REPO_SAMPLES / "labels.json").read_text())
    assert committed == json.loads((tmp_path / "labels.json").read_text()), "run write_samples(Path('samples'))"
    for name in committed["labels"]:
        assert (REPO_SAMPLES / name).read_bytes() == (tmp_path / name).read_bytes(), name
