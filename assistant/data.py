"""Training and evaluation data: images with +1 / -1 / 0 targets, and their transforms.

Two sources share one interface (a torch ``Dataset`` of ``(uint8 CHW image, int8 targets)``):
in-memory arrays (the benchmark world) and image files (fine-tuning rounds on Label Studio
annotations). Transforms work on uint8 tensors, so the same augmentation serves both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import v2

from assistant.backbone import Backbone
from assistant.errors import DataError

__all__ = ["ArrayImageDataset", "FileImageDataset", "eval_transform", "manifest_hash", "train_transform"]

Sample = tuple[torch.Tensor, torch.Tensor]


def _check_targets(targets: NDArray[Any], n: int) -> NDArray[Any]:
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != n:
        raise DataError(f"targets must be (images, labels) with {n} rows, got shape {targets.shape}")
    if not np.isin(targets, (-1, 0, 1)).all():
        raise DataError("targets must hold only +1, -1 and 0", fix="encode present=+1, absent=-1, unknown=0")
    return targets.astype(np.int8)


class ArrayImageDataset(Dataset[Sample]):
    """Images held in memory as a uint8 ``(N, H, W, 3)`` array.

    Args:
        images: The pixels.
        targets: ``(N, C)`` in {+1, -1, 0}.
    """

    def __init__(self, images: NDArray[Any], targets: NDArray[Any]) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images = images
        self.targets = _check_targets(targets, images.shape[0])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> Sample:
        pixels = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return pixels, torch.from_numpy(self.targets[index])


class FileImageDataset(Dataset[Sample]):
    """Images on disk (any format PIL reads), EXIF orientation applied, converted to RGB.

    Args:
        paths: Image files.
        targets: ``(N, C)`` in {+1, -1, 0}.
        max_side: Larger images are downscaled on load (training never needs full resolution).
    """

    def __init__(self, paths: Sequence[Path], targets: NDArray[Any], max_side: int = 512) -> None:
        self.paths = [Path(p) for p in paths]
        self.targets = _check_targets(targets, len(self.paths))
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                rgb.thumbnail((self.max_side, self.max_side))
                pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read training image {path}", why=str(exc)) from exc
        return pixels, torch.from_numpy(self.targets[index])


def eval_transform(backbone: Backbone) -> v2.Compose:
    """uint8 ``(3, H, W)`` to the backbone's normalised input: resize, centre crop, normalise."""
    size = backbone.image_size
    return v2.Compose(
        [
            v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(backbone.image_mean), list(backbone.image_std)),
        ]
    )


def train_transform(backbone: Backbone, scale: tuple[float, float] = (0.5, 1.0)) -> v2.Compose:
    """Random resized crop and horizontal flip, then normalisation (MKT uses RandAugment too)."""
    size = backbone.image_size
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(backbone.image_mean), list(backbone.image_std)),
        ]
    )


def manifest_hash(items: Sequence[str], targets: NDArray[Any]) -> str:
    """A digest of a dataset's identity: item ids (paths, hashes) and its target matrix."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8"))
        digest.update(b"\x00")
    digest.update(np.ascontiguousarray(targets, dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]
