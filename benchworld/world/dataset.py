"""The ML-ZSL benchmark splits: generate, save (compressed .npz) and load, with a data hash.

The protocol follows NUS-WIDE's (docs/method.md §8): targets are +1 (present), -1 (absent) and 0
(unknown). In the multi-label ``train`` and ``val`` splits every unseen label is 0 on every image,
although unseen objects do appear in those images, unannotated, as NUS-WIDE's 81 concepts appear
in its training images; ``test`` is annotated +1/-1 on all labels. Train and validation files
carry no captions, so that no unseen label word can leak into fine-tuning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from assistant.errors import DataError
from benchworld.world.captions import make_captions
from benchworld.world.config import FULL_SIZES, SplitSizes, Stream, WorldConfig
from benchworld.world.project import project_scene
from benchworld.world.scenes import SceneGenerator
from benchworld.world.vocabulary import VOCABULARY_VERSION, Vocabulary, default_vocabulary

__all__ = ["MultiLabelSplit", "SplitName", "build_world", "generate_split", "load_split", "load_world", "save_split"]

SplitName = Literal["train", "val", "test"]
Progress = Callable[[int, int], None]

_STREAMS: Final[dict[str, Stream]] = {"train": Stream.TRAIN, "val": Stream.VAL, "test": Stream.TEST}
_FIX = "regenerate it with `assistant world build` (the world version is in benchworld/world/vocabulary.py)"


@dataclass(frozen=True)
class MultiLabelSplit:
    """One split of the multi-label benchmark.

    Attributes:
        name: ``train``, ``val`` or ``test``.
        images: ``(N, S, S, 3)`` uint8 RGB.
        targets: ``(N, L)`` int8 in {+1, -1, 0}; 0 marks unknown (unseen labels outside test).
        label_names: Column names (the vocabulary order).
        seen: ``(L,)`` bool, True for seen labels.
        captions: Per image, its captions (test only; empty tuples otherwise).
        version: World version the data was generated with.
        data_hash: SHA-256 over version, names, images, targets and captions.
    """

    name: str
    images: NDArray[np.uint8]
    targets: NDArray[np.int8]
    label_names: tuple[str, ...]
    seen: NDArray[np.bool_]
    captions: tuple[tuple[str, ...], ...]
    version: str
    data_hash: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _hash(
    name: str,
    version: str,
    names: tuple[str, ...],
    images: NDArray[np.uint8],
    targets: NDArray[np.int8],
    captions: tuple[tuple[str, ...], ...],
) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([name, version, list(names), list(images.shape)]).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(targets).tobytes())
    digest.update(json.dumps(captions).encode())
    return digest.hexdigest()


def generate_split(
    name: SplitName,
    count: int,
    world: WorldConfig | None = None,
    vocab: Vocabulary | None = None,
    progress: Progress | None = None,
) -> MultiLabelSplit:
    """Generate one split in memory.

    Args:
        name: Which split (selects its image stream and its target encoding).
        count: Number of images.
        world: World configuration (default :class:`WorldConfig`).
        vocab: Vocabulary (default :func:`default_vocabulary`).
        progress: Called as ``progress(done, count)`` every 256 images and at the end.

    Returns:
        The split, hashed.
    """
    world = world or WorldConfig()
    vocab = vocab or default_vocabulary(world.version)
    generator = SceneGenerator(world.scene)
    size = world.scene.image_size
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    truth = np.empty((count, len(vocab)), dtype=np.uint8)
    captions: list[tuple[str, ...]] = []
    for i in range(count):
        scene, draws = project_scene(world, generator, int(_STREAMS[name]), i)
        images[i] = scene.image
        truth[i] = vocab.multi_hot(scene.labels)
        if name == "test":
            captions.append(tuple(c.text for c in make_captions(scene, vocab, draws, world.captions)))
        else:
            captions.append(())
        if progress is not None and ((i + 1) % 256 == 0 or i + 1 == count):
            progress(i + 1, count)
    targets = np.where(truth > 0, 1, -1).astype(np.int8)
    if name != "test":
        targets[:, ~vocab.seen_mask] = 0  # unseen labels are never annotated outside test
    caption_rows = tuple(captions)
    data_hash = _hash(name, vocab.version, vocab.names, images, targets, caption_rows)
    return MultiLabelSplit(
        name, images, targets, vocab.names, vocab.seen_mask.copy(), caption_rows, vocab.version, data_hash
    )


def save_split(split: MultiLabelSplit, path: Path) -> None:
    """Write a split as a compressed ``.npz`` (uint8 images compress ~2x)."""
    meta = {"name": split.name, "version": split.version, "data_hash": split.data_hash}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        images=split.images,
        targets=split.targets,
        label_names=np.asarray(split.label_names),
        seen=split.seen,
        captions=np.asarray(json.dumps(split.captions)),
        meta=np.asarray(json.dumps(meta)),
    )


def load_split(path: Path, verify: bool = True, version: str = VOCABULARY_VERSION) -> MultiLabelSplit:
    """Read a split written by :func:`save_split`.

    Args:
        path: The ``.npz`` file.
        verify: Recompute the data hash (~0.5 s per 100 MB) and compare.
        version: The world version the split must be from.

    Raises:
        DataError: The file is missing, from another world version, or corrupt.
    """
    if not path.is_file():
        raise DataError(f"benchmark split {path} not found", fix=f"build it first: {_FIX}")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        captions = tuple(tuple(row) for row in json.loads(str(data["captions"])))
        split = MultiLabelSplit(
            name=meta["name"],
            images=data["images"],
            targets=data["targets"],
            label_names=tuple(str(n) for n in data["label_names"]),
            seen=data["seen"].astype(bool),
            captions=captions,
            version=meta["version"],
            data_hash=meta["data_hash"],
        )
    if split.version != version:
        raise DataError(
            f"benchmark split {path} is from world {split.version!r}",
            why=f"world {version!r} was asked for; labels or images may differ",
            fix=_FIX,
        )
    if verify:
        actual = _hash(split.name, split.version, split.label_names, split.images, split.targets, split.captions)
        if actual != split.data_hash:
            raise DataError(
                f"benchmark split {path} does not match its data hash",
                why="the file is corrupt or was edited",
                fix=_FIX,
            )
    return split


def build_world(
    out_dir: Path,
    world: WorldConfig | None = None,
    sizes: SplitSizes = FULL_SIZES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Generate and write the three splits and a ``manifest.json``.

    Args:
        out_dir: Folder to write ``train.npz``, ``val.npz``, ``test.npz`` and ``manifest.json``.
        world: World configuration.
        sizes: Split sizes (``FULL_SIZES`` or ``QUICK_SIZES``).
        progress: Called as ``progress(split, done, count)``.

    Returns:
        Split name -> path of its file.
    """
    world = world or WorldConfig()
    vocab = default_vocabulary(world.version)
    paths: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for name, count in (("train", sizes.train), ("val", sizes.val), ("test", sizes.test)):
        report = None if progress is None else (lambda done, total, _n=name: progress(_n, done, total))
        split = generate_split(name, count, world, vocab, report)  # type: ignore[arg-type]
        paths[name] = out_dir / f"{name}.npz"
        save_split(split, paths[name])
        hashes[name] = split.data_hash
    manifest = {
        "version": vocab.version,
        "vocabulary_fingerprint": vocab.fingerprint,
        "world": world.to_dict(),
        "sizes": {"train": sizes.train, "val": sizes.val, "test": sizes.test},
        "labels": [{"name": s.name, "kind": str(s.kind), "seen": s.name not in vocab.unseen} for s in vocab.labels],
        "data_hashes": hashes,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def load_world(out_dir: Path, verify: bool = True, version: str = VOCABULARY_VERSION) -> dict[str, MultiLabelSplit]:
    """Load the three splits written by :func:`build_world` (of world ``version``)."""
    return {name: load_split(out_dir / f"{name}.npz", verify, version) for name in ("train", "val", "test")}
