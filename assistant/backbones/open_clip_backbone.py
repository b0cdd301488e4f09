"""open_clip models behind the :class:`~assistant.backbone.Backbone` interface."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from assistant.backbone import Backbone, ImageFeatures
from assistant.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from assistant.backbones.registry import BackboneSpec

__all__ = ["MODEL_CONFIGS_DIR", "OpenClipBackbone", "build_open_clip", "list_model_configs", "register_model_config"]

# The project's own architecture configs (tiny test models, the benchmark world model).
MODEL_CONFIGS_DIR = Path(__file__).resolve().parents[1] / "model_configs"

# CLIP's pixel statistics (open_clip's defaults when a config names none).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipBackbone(Backbone):
    """An ``open_clip`` CLIP or CustomTextCLIP model with a ViT (or ResNet) image tower.

    Args:
        model: The open_clip model.
        name: Its architecture name.
        tokenizer: The tokenizer returned by ``open_clip.get_tokenizer``.
        preprocess: The evaluation transform returned by ``create_model_and_transforms``.
    """

    # The wrapped open_clip model is untyped (its submodules resolve to Tensor | Module).
    model: Any

    def __init__(self, model: Any, name: str, tokenizer: Any, preprocess: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        visual = model.visual
        # `_embeds`/`_pool` are open_clip's own ViT steps (pinned open_clip 3.x; covered by a test
        # that checks encode_image against open_clip's forward).
        self._is_vit = hasattr(visual, "transformer") and hasattr(visual, "class_embedding")
        self.embed_dim = int(self._text_projection_out())
        self.context_length = int(self._text.positional_embedding.shape[0])
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        pp_cfg = getattr(visual, "preprocess_cfg", {}) or {}
        mean, std = pp_cfg.get("mean", OPENAI_MEAN), pp_cfg.get("std", OPENAI_STD)
        self.image_mean = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.image_std = (float(std[0]), float(std[1]), float(std[2]))
        self.sot_token_id = int(getattr(tokenizer, "sot_token_id", 49406))
        self.eot_token_id = int(getattr(tokenizer, "eot_token_id", 49407))

    @property
    def _text(self) -> Any:
        # CustomTextCLIP keeps the text tower in `.text`; CLIP keeps its parts on the model itself.
        # A property, not an attribute: assigning a module would register it twice in state_dict.
        model = self.model
        return model.text if hasattr(model, "text") else model

    def _text_projection_out(self) -> int:
        proj = self._text.text_projection
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        if proj is None:
            return int(self._text.transformer.width)
        return int(proj.shape[1])

    # --- image side -----------------------------------------------------------------------------
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self._is_vit:
            raise ModelLoadError(
                f"the image tower of {self.name} is not a vision transformer",
                why="stage-1 fine-tuning and the local stream need transformer blocks and patch tokens",
                fix="use a ViT architecture (e.g. ViT-B-16) for MKT",
            )
        return cast(torch.Tensor, self.model.visual._embeds(pixels))

    @property
    def visual_blocks(self) -> nn.ModuleList:
        if not self._is_vit:
            return nn.ModuleList()
        return cast(nn.ModuleList, self.model.visual.transformer.resblocks)

    def run_visual_blocks(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        transformer = self.model.visual.transformer
        blocks = list(transformer.resblocks)[start:stop]
        x = tokens if transformer.batch_first else tokens.transpose(0, 1)
        for block in blocks:
            x = block(x)
        return x if transformer.batch_first else x.transpose(0, 1)

    def project_image(self, tokens: torch.Tensor) -> ImageFeatures:
        visual = self.model.visual
        pooled, patches = visual._pool(tokens)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
            # The local stream scores patches in the joint space: they need the same projection.
            patches = patches @ visual.proj
        return ImageFeatures(pooled, patches)

    def visual_head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (n, p) for n, p in self.named_parameters() if n.startswith(("model.visual.ln_post.", "model.visual.proj"))
        ]

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        if self._is_vit:
            return super().encode_image(pixels)
        # Convolutional towers: global embedding only; the head falls back to the global stream.
        return ImageFeatures(cast(torch.Tensor, self.model.visual(pixels)), None)

    def is_visual_parameter(self, name: str) -> bool:
        return name.startswith("model.visual.")

    # --- text side ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return cast(torch.Tensor, self._tokenizer(list(texts), context_length=self.context_length))

    def encode_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(self._tokenizer.encode(t)) for t in texts]

    @property
    def token_embedding(self) -> nn.Embedding:
        return cast(nn.Embedding, self._text.token_embedding)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        text = self._text
        cast_dtype = text.transformer.get_cast_dtype()
        length = tokens.shape[1]
        x = embeds.to(cast_dtype) + text.positional_embedding[:length].to(cast_dtype)
        mask = text.attn_mask
        x = text.transformer(x, attn_mask=None if mask is None else mask[:length, :length])
        x = text.ln_final(x)
        eot = (tokens == self.eot_token_id).int().argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = text.text_projection
        out: torch.Tensor = proj(x) if isinstance(proj, nn.Linear) else (x if proj is None else x @ proj)
        return out

    # --- preprocessing --------------------------------------------------------------------------
    def preprocess(self) -> Callable[[Any], torch.Tensor]:
        return self._preprocess


def register_model_config(path: str | Path) -> None:
    """Register one open_clip architecture config (``<name>.json``) or a directory of them."""
    import open_clip

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model config {path} does not exist", fix="pass a JSON file or a directory of them")
    open_clip.add_model_config(path)


@functools.cache
def _register_project_configs() -> None:
    # Once per process, on first use (not at import): open_clip's registry is a module global.
    register_model_config(MODEL_CONFIGS_DIR)


def list_model_configs() -> list[str]:
    """Every open_clip architecture name known, the project's own included."""
    import open_clip

    _register_project_configs()
    return list(open_clip.list_models())


def build_open_clip(spec: BackboneSpec) -> OpenClipBackbone:
    """Build an ``open_clip`` or ``open_clip_dir`` spec (the registry's builder; see ``assistant.factory``)."""
    import open_clip

    _register_project_configs()
    if spec.backbone_kind.directory:
        directory = Path(spec.name)
        if not (directory / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"{directory} is not an open_clip model directory",
                why="open_clip_config.json is missing",
                fix="point at a directory holding open_clip_config.json and open_clip_model.safetensors",
            )
        model_name = f"local-dir:{directory}"
        pretrained = None
    else:
        model_name, pretrained = spec.name, spec.pretrained
        if model_name not in open_clip.list_models():
            raise ConfigError(
                f"unknown open_clip architecture '{model_name}'",
                fix="use one of open_clip.list_models() (e.g. ViT-B-16, ViT-B-32), or register a JSON config "
                "with assistant.factory.register_model_config",
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, require_pretrained=spec.has_weights, weights_only=True
        )
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise ModelLoadError(
            f"could not load the weights of '{spec}'",
            why=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            fix="download the weights where there is internet and pass the local file "
            f"('{spec.name}:/path/to/open_clip_pytorch_model.bin') or an open_clip model directory; "
            "for OpenAI weights from a file use the '-quickgelu' architecture",
        ) from exc
    tokenizer = open_clip.get_tokenizer(model_name)
    return OpenClipBackbone(
        model,
        name=Path(spec.name).name if spec.backbone_kind.directory else spec.name,
        tokenizer=tokenizer,
        preprocess=preprocess,
    )
