"""The vision-language backbone interface every model family implements.

A :class:`Backbone` wraps one CLIP-style model (open_clip or Hugging Face transformers) behind the
operations MKT needs:

- the image side split into an embedding stem, a stack of blocks and a projection head, so that
  stage 1 can fine-tune the last blocks while a frozen teacher shares the lower ones;
- :meth:`Backbone.encode_image` returning the global (class token) embedding **and** the patch
  tokens, both already through the visual projection (open_clip's ``output_tokens`` gives
  un-projected patches: see docs/method.md §6);
- the text side, including :meth:`Backbone.encode_text_embeddings`, which runs the text tower on
  token embeddings so that a prompt learner can inject learnable context vectors.

Backbones are built only by :func:`assistant.factory.create_backbone`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Backbone", "ImageFeatures"]


@dataclass(frozen=True)
class ImageFeatures:
    """Projected image features, not normalised.

    Attributes:
        global_emb: ``(B, D)`` class-token embedding through the visual projection.
        patches: ``(B, N, D)`` patch tokens through the same projection, or None for towers
            without patch tokens (convolutional ones); the head then uses the global stream only.
    """

    global_emb: torch.Tensor
    patches: torch.Tensor | None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageFeatures:
        """The same features on another device (and dtype)."""
        patches = None if self.patches is None else self.patches.to(device=device, dtype=dtype)
        return ImageFeatures(self.global_emb.to(device=device, dtype=dtype), patches)

    def __len__(self) -> int:
        return int(self.global_emb.shape[0])

    def index(self, idx: slice | Sequence[int] | torch.Tensor) -> ImageFeatures:
        """A subset of the images."""
        patches = None if self.patches is None else self.patches[idx]
        return ImageFeatures(self.global_emb[idx], patches)

    @staticmethod
    def cat(parts: Sequence[ImageFeatures]) -> ImageFeatures:
        """Concatenate along the image axis."""
        if not parts:
            raise ValueError("cannot concatenate an empty list of features")
        glob = torch.cat([p.global_emb for p in parts])
        if any(p.patches is None for p in parts):
            return ImageFeatures(glob, None)
        return ImageFeatures(glob, torch.cat([p.patches for p in parts if p.patches is not None]))


class Backbone(nn.Module, abc.ABC):
    """A CLIP-style dual encoder with the hooks MKT needs.

    Attributes:
        name: The architecture name (``ViT-B-16``, ``world-tiny``, ``hf:clip``...).
        embed_dim: Width of the joint image-text space.
        context_length: The text tower's maximum token count.
        image_size: Input resolution (square).
        image_mean, image_std: Normalisation of the input pixels.
        sot_token_id, eot_token_id: Start/end-of-text token ids of the tokenizer.
        spec: The spec it was built from (see :class:`assistant.factory.BackboneSpec`).
        version: Identifies the weights it was built with (a hash of the weights file, the
            pretrained tag, or ``random:<name>``); part of every checkpoint's lineage.
    """

    name: str
    spec: str = ""
    version: str = ""
    embed_dim: int
    context_length: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    sot_token_id: int
    eot_token_id: int

    # --- image side -----------------------------------------------------------------------------
    @abc.abstractmethod
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patchify and embed: ``(B, 3, H, W)`` pixels to ``(B, 1 + N, W)`` tokens (class first)."""

    @property
    @abc.abstractmethod
    def visual_blocks(self) -> nn.ModuleList:
        """The image transformer blocks, in order."""

    @abc.abstractmethod
    def run_visual_blocks(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start..stop-1`` on ``(B, T, W)`` tokens (batch first)."""

    @abc.abstractmethod
    def project_image(self, tokens: torch.Tensor) -> ImageFeatures:
        """Final norm and visual projection of the class token and every patch token."""

    @abc.abstractmethod
    def visual_head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters after the blocks (final norm, projection), trainable in stage 1."""

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        """Global embedding and projected patch tokens of a batch of preprocessed images."""
        return self.project_image(self.run_visual_blocks(self.embed_image(pixels)))

    # --- text side ------------------------------------------------------------------------------
    @abc.abstractmethod
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(n, context_length)``: SOT, text, EOT, zero padding."""

    @abc.abstractmethod
    def encode_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        """The BPE ids of each text, without SOT/EOT or padding."""

    @property
    @abc.abstractmethod
    def token_embedding(self) -> nn.Embedding:
        """The text tower's token embedding table."""

    @abc.abstractmethod
    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Run the text tower on ``(n, L, W)`` token embeddings; ``tokens`` locates EOT.

        ``L`` may be shorter than :attr:`context_length`: the tower is causal, so positions after
        the last EOT cannot change the result, and cutting them saves most of the work for short
        label prompts.
        """

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``(n, D)`` of token ids, not normalised."""
        tokens = trim_to_eot(tokens, self.eot_token_id)
        return self.encode_text_embeddings(self.token_embedding(tokens), tokens)

    # --- preprocessing --------------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self) -> Callable[[Any], torch.Tensor]:
        """The evaluation transform: a PIL image to a ``(3, S, S)`` normalised tensor."""

    def image_tower_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of the image side (used for versioning the feature cache)."""
        return [(n, p) for n, p in self.named_parameters() if self.is_visual_parameter(n)]

    @abc.abstractmethod
    def is_visual_parameter(self, name: str) -> bool:
        """Whether a parameter name (from ``named_parameters``) belongs to the image side."""


def trim_to_eot(tokens: torch.Tensor, eot_token_id: int) -> torch.Tensor:
    """Cut padding columns after the last EOT of the batch (a causal tower ignores them)."""
    is_eot = tokens == eot_token_id
    if not bool(is_eot.any(dim=1).all()):
        # A truncated prompt has no EOT in some rows; keep the full width to stay exact.
        return tokens
    last = int(is_eot.int().argmax(dim=1).max().item())
    return tokens[:, : last + 1]
