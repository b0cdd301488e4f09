"""Hugging Face ``transformers`` CLIP models behind the :class:`~assistant.backbone.Backbone` interface."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torchvision import transforms

from assistant.backbone import Backbone, ImageFeatures
from assistant.errors import ModelLoadError

if TYPE_CHECKING:
    from assistant.backbones.registry import BackboneSpec

__all__ = ["HFClipBackbone", "build_hf_clip"]

# Weight files that are pickles: a Hugging Face directory must hold safetensors instead.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


class HFClipBackbone(Backbone):
    """A ``transformers.CLIPModel`` (ViT image tower).

    Args:
        model: The CLIP model.
        tokenizer: A ``transformers.CLIPTokenizer`` for it.
        name: A display name (``hf:<dir name>``).
        image_mean, image_std: Normalisation from the model's image processor config.
        resize: Shortest-edge resize before the centre crop.
    """

    # The wrapped transformers model (its submodules resolve to Tensor | Module for mypy).
    model: Any

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        resize: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self._tokenizer = tokenizer
        cfg = model.config
        self.embed_dim = int(cfg.projection_dim)
        self.context_length = int(cfg.text_config.max_position_embeddings)
        self.image_size = int(cfg.vision_config.image_size)
        self.image_mean = image_mean
        self.image_std = image_std
        self._resize = resize or self.image_size
        self.sot_token_id = int(tokenizer.bos_token_id)
        self.eot_token_id = int(tokenizer.eos_token_id)

    # --- image side -----------------------------------------------------------------------------
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.model.vision_model
        return cast(torch.Tensor, vision.pre_layrnorm(vision.embeddings(pixels)))

    @property
    def visual_blocks(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.model.vision_model.encoder.layers)

    def run_visual_blocks(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        x = tokens
        for layer in list(self.visual_blocks)[start:stop]:
            x = layer(x, None)
        return x

    def project_image(self, tokens: torch.Tensor) -> ImageFeatures:
        vision = self.model.vision_model
        # post_layernorm + visual_projection, applied to the class token (HF's pooler_output) and,
        # for the local stream, to every patch token.
        normed = vision.post_layernorm(tokens)
        projected = self.model.visual_projection(normed)
        return ImageFeatures(projected[:, 0], projected[:, 1:])

    def visual_head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        prefixes = ("model.vision_model.post_layernorm.", "model.visual_projection.")
        return [(n, p) for n, p in self.named_parameters() if n.startswith(prefixes)]

    def is_visual_parameter(self, name: str) -> bool:
        return name.startswith(("model.vision_model.", "model.visual_projection."))

    # --- text side ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.encode_tokens(texts)
        out = torch.zeros(len(ids), self.context_length, dtype=torch.long)
        for row, seq in enumerate(ids):
            # Same layout as open_clip: SOT, text (truncated), EOT, zero padding.
            seq = [self.sot_token_id, *seq[: self.context_length - 2], self.eot_token_id]
            out[row, : len(seq)] = torch.tensor(seq)
        return out

    def encode_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(self._tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    @property
    def token_embedding(self) -> nn.Embedding:
        return cast(nn.Embedding, self.model.text_model.embeddings.token_embedding)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        text = self.model.text_model
        length = tokens.shape[1]
        positions = text.embeddings.position_embedding.weight[:length]
        x = embeds + positions
        # Causal mask as an additive float mask, accepted by both the eager and the SDPA kernels.
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        x = text.encoder(inputs_embeds=x, attention_mask=mask[None, None]).last_hidden_state
        x = text.final_layer_norm(x)
        eot = (tokens == self.eot_token_id).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return cast(torch.Tensor, self.model.text_projection(pooled))

    # --- preprocessing --------------------------------------------------------------------------
    def preprocess(self) -> Callable[[Any], torch.Tensor]:
        return cast(
            Callable[[Any], torch.Tensor],
            transforms.Compose(
                [
                    transforms.Resize(self._resize, interpolation=transforms.InterpolationMode.BICUBIC),
                    transforms.CenterCrop(self.image_size),
                    transforms.Lambda(_to_rgb),
                    transforms.ToTensor(),
                    transforms.Normalize(self.image_mean, self.image_std),
                ]
            ),
        )


def _to_rgb(image: Any) -> Any:
    # A named function, not a lambda, so that the transform pickles into data-loader workers.
    return image.convert("RGB")


def build_hf_clip(spec: BackboneSpec) -> HFClipBackbone:
    """Build an ``hf`` spec: a local Hugging Face CLIP directory, safetensors only (the registry's builder)."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    # Loading a local directory needs no per-shard progress bar on stderr.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    directory = Path(spec.name)
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{directory} is not a Hugging Face model directory",
            why="config.json is missing",
            fix="save the model with CLIPModel.save_pretrained(dir) and its tokenizer with save_pretrained(dir)",
        )
    _require_safetensors(directory)
    try:
        # use_safetensors=True: a pytorch_model.bin next to the safetensors is never unpickled.
        model = CLIPModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the Hugging Face CLIP model in {directory}",
            why=str(exc).splitlines()[0],
            fix="the directory needs config.json, the weights (model.safetensors) and the tokenizer files "
            "(vocab.json, merges.txt)",
        ) from exc
    mean, std, resize = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), None
    processor_cfg = directory / "preprocessor_config.json"
    if processor_cfg.is_file():
        cfg = json.loads(processor_cfg.read_text())
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
        size = cfg.get("size", {})
        resize = size.get("shortest_edge") if isinstance(size, dict) else size
    return HFClipBackbone(model, tokenizer, name=f"hf:{directory.name}", image_mean=mean, image_std=std, resize=resize)


def _require_safetensors(directory: Path) -> None:
    """Refuse a Hugging Face directory whose weights exist only as pickles (``pytorch_model.bin``)."""
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(
        p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES or p.name.endswith(".bin.index.json")
    )
    what = f"the Hugging Face model in {directory} has no safetensors weights"
    if not pickles:
        raise ModelLoadError(
            what,
            why="there is no model.safetensors in it",
            fix="save the model there with CLIPModel.save_pretrained(dir), or download its safetensors files",
        )
    raise ModelLoadError(
        what,
        why=f"it holds only {', '.join(pickles)}: pickled weights, which can run code when they are loaded, "
        "so the assistant never loads them",
        fix='convert the model once, from a copy you trust: python -c "from transformers import CLIPModel; '
        f"CLIPModel.from_pretrained('{directory}').save_pretrained('{directory}')\" writes model.safetensors "
        "next to it (or download the model's safetensors files)",
    )
