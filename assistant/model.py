"""The MKT model: a backbone, a prompt learner and the two-stream head.

Example:
    >>> backbone = create_backbone("local-dir:assets/world-tiny")          # doctest: +SKIP
    >>> model = MKTModel(backbone, HeadConfig(), PromptConfig())           # doctest: +SKIP
    >>> feats = model.encode_images(pixels)                                # doctest: +SKIP
    >>> scores = model.score(feats, ["cat", "dog", "snow"]).fused          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from assistant.backbone import Backbone, ImageFeatures
from assistant.config import HeadConfig, PromptConfig
from assistant.head import HeadScores, two_stream_scores
from assistant.labels import LabelSet
from assistant.prompt_learner import PromptLearner

__all__ = ["LabelEmbeddingCache", "MKTModel"]


class LabelEmbeddingCache:
    """Label embeddings cached by (model version, prompt key, label text), least recently used out.

    Embedding a label costs a text-tower pass; re-tagging with one new label must cost one pass,
    not one per vocabulary entry.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_many(self, version: str, prompt_key: str, labels: Sequence[str]) -> list[torch.Tensor | None]:
        """Cached embeddings (None where missing)."""
        out: list[torch.Tensor | None] = []
        for label in labels:
            key = (version, prompt_key, label)
            value = self._data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
            out.append(value)
        return out

    def put_many(self, version: str, prompt_key: str, labels: Sequence[str], values: torch.Tensor) -> None:
        """Store ``values[i]`` for ``labels[i]``."""
        for label, value in zip(labels, values, strict=True):
            self._data[(version, prompt_key, label)] = value.detach()
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        """Drop everything (after training changes the prompt)."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class MKTModel(nn.Module):
    """Backbone + prompt learner + two-stream head, with the label set it was trained on.

    Args:
        backbone: The (student) vision-language backbone.
        head: The head configuration.
        prompt: The prompt configuration.
        seen_labels: Labels the model was trained on (empty for a zero-shot base model).
        version: The model version (a registry version, or the backbone's weights version).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: HeadConfig,
        prompt: PromptConfig,
        seen_labels: LabelSet | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head
        self.prompt_config = prompt
        self.prompt_learner = PromptLearner(backbone, prompt)
        self.seen_labels = seen_labels if seen_labels is not None else LabelSet(())
        self.version = version or backbone.version
        self.embedding_cache = LabelEmbeddingCache()

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    # --- images ---------------------------------------------------------------------------------
    def encode_images(self, pixels: torch.Tensor) -> ImageFeatures:
        """Global embeddings and projected patch tokens of preprocessed images."""
        return self.backbone.encode_image(pixels)

    def image_tower_version(self) -> str:
        """A digest of the image side's weights: the feature-cache key (stage 1 changes it)."""
        digest = hashlib.sha256()
        for name, param in self.backbone.image_tower_parameters():
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    # --- labels ---------------------------------------------------------------------------------
    @property
    def prompt_key(self) -> str:
        """Identifies the prompt (template, tuning) in the embedding cache."""
        cfg = self.prompt_config
        return f"{cfg.tuning}:{cfg.template}"

    def label_embeddings(self, labels: Sequence[str], *, use_cache: bool = True) -> torch.Tensor:
        """Embeddings ``(C, D)`` of any labels from the (tuned) prompt.

        With ``use_cache`` (inference) they come from and go to the cache and carry no gradient;
        without it (training) they are differentiable w.r.t. the prompt context.
        """
        if not use_cache:
            return cast(torch.Tensor, self.prompt_learner(list(labels)))
        cached = self.embedding_cache.get_many(self.version, self.prompt_key, labels)
        missing = [label for label, emb in zip(labels, cached, strict=True) if emb is None]
        if missing:
            with torch.no_grad():
                fresh = self.prompt_learner(missing)
            self.embedding_cache.put_many(self.version, self.prompt_key, missing, fresh)
            cached = self.embedding_cache.get_many(self.version, self.prompt_key, labels)
        return torch.stack([c for c in cached if c is not None])

    def is_seen(self, labels: Sequence[str]) -> list[bool]:
        """Per label: True when the model was trained on it."""
        return [label in self.seen_labels for label in labels]

    # --- scores ---------------------------------------------------------------------------------
    def score(
        self,
        features: ImageFeatures,
        labels: Sequence[str] | torch.Tensor,
        *,
        mode: str | None = None,
        use_cache: bool = True,
    ) -> HeadScores:
        """Two-stream scores of images against labels (names, or precomputed embeddings)."""
        emb = labels if isinstance(labels, torch.Tensor) else self.label_embeddings(labels, use_cache=use_cache)
        head = self.head_config
        if mode is not None and mode != head.mode:
            head = HeadConfig(head.topk, head.global_weight, head.local_weight, mode)  # type: ignore[arg-type]
        return two_stream_scores(features, emb.to(features.global_emb.device), head)
