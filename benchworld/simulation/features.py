"""Image features of simulation images under a model, computed once per image tower."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from assistant.backbone import ImageFeatures
from assistant.checkpoint import LoadedModel
from assistant.data import ArrayImageDataset
from assistant.train import encode_dataset

__all__ = ["CachedFeatures", "encode_images"]


def encode_images(loaded: LoadedModel, images: NDArray[np.uint8], batch: int) -> ImageFeatures:
    """The image tower's features (global and patch embeddings) of ``(N, S, S, 3)`` uint8 images."""
    dummy = np.zeros((images.shape[0], 1), dtype=np.int8)
    feats, _ = encode_dataset(loaded.model, ArrayImageDataset(images, dummy), batch)
    return feats


class CachedFeatures:
    """A fixed image set's features under the model in service, encoded again only on a new tower.

    Stage 2 leaves the image tower unchanged, so its rounds reuse the features; a promoted
    stage-1 candidate has a new tower and the images are encoded again, as the workers' feature
    cache keys features by tower version.

    Args:
        images: ``(N, S, S, 3)`` uint8 images.
        batch: Images per forward pass.
    """

    def __init__(self, images: NDArray[np.uint8], batch: int) -> None:
        self.images, self.batch = images, batch
        self._key: str | None = None
        self._features: ImageFeatures | None = None

    def of(self, loaded: LoadedModel) -> ImageFeatures:
        """The features under ``loaded`` (cached while its image tower version is unchanged)."""
        key = loaded.model.image_tower_version()
        if self._features is None or key != self._key:
            self._features, self._key = encode_images(loaded, self.images, self.batch), key
        return self._features
