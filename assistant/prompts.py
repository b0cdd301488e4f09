"""Prompt template sets (data files under ``prompts/``) and zero-shot label embeddings.

A prompt set is a JSON file ``<name>.json``::

    {"name": "scene", "version": 1, "description": "...",
     "templates": ["There is a {} in the scene.", "a photo of the {}."],
     "descriptions": {"tv": "television"}}          # optional per-label wording

The registry is built from a directory once and is immutable afterwards; an unknown name is an
error listing the valid ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F

from assistant.backbone import Backbone
from assistant.errors import ConfigError

__all__ = ["PromptRegistry", "PromptSet", "zero_shot_label_embeddings"]

logger = logging.getLogger(__name__)

# Labels embedded per text-tower call: bounds memory for 10,000-label vocabularies.
TEXT_BATCH = 256


@dataclass(frozen=True)
class PromptSet:
    """A named, versioned list of templates (``{}`` marks the label)."""

    name: str
    version: int
    templates: tuple[str, ...]
    description: str = ""
    # Optional wording per label ("tv" -> "television") used instead of the raw name.
    descriptions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.templates:
            raise ConfigError(f"prompt set '{self.name}' has no templates", fix="add at least one template with '{}'")
        bad = [t for t in self.templates if t.count("{}") != 1]
        if bad:
            raise ConfigError(
                f"prompt set '{self.name}' has templates without exactly one '{{}}': {bad}",
                fix="write templates like 'a photo of a {}.'",
            )

    @property
    def key(self) -> str:
        """Identifies the set and its version in caches and checkpoints (``scene@1``)."""
        return f"{self.name}@{self.version}"

    def texts(self, label: str) -> list[str]:
        """The prompts for one label."""
        wording = self.descriptions.get(label, label)
        return [t.format(wording) for t in self.templates]

    @classmethod
    def from_file(cls, path: Path) -> PromptSet:
        """Load one prompt set file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read prompt set {path}", why=str(exc), fix="fix the JSON file") from exc
        if not isinstance(data, dict) or "templates" not in data:
            raise ConfigError(f"prompt set {path} has no 'templates' list", fix='add "templates": ["a photo of a {}."]')
        return cls(
            name=str(data.get("name", path.stem)),
            version=int(data.get("version", 1)),
            templates=tuple(str(t) for t in data["templates"]),
            description=str(data.get("description", "")),
            descriptions=MappingProxyType({str(k): str(v) for k, v in data.get("descriptions", {}).items()}),
        )


class PromptRegistry:
    """The prompt sets of one directory, by name."""

    def __init__(self, sets: Sequence[PromptSet]) -> None:
        by_name: dict[str, PromptSet] = {}
        for prompt_set in sets:
            if prompt_set.name in by_name:
                logger.warning("prompt set '%s' is defined twice; keeping the first", prompt_set.name)
                continue
            by_name[prompt_set.name] = prompt_set
        self._sets = MappingProxyType(by_name)

    @classmethod
    def from_dir(cls, directory: Path) -> PromptRegistry:
        """Load every ``*.json`` file of a directory."""
        if not directory.is_dir():
            raise ConfigError(
                f"the prompt directory {directory} does not exist",
                fix="set ASSISTANT_PROMPTS_DIR to the prompts/ folder",
            )
        return cls([PromptSet.from_file(p) for p in sorted(directory.glob("*.json"))])

    def names(self) -> list[str]:
        """The registered set names."""
        return sorted(self._sets)

    def get(self, name: str) -> PromptSet:
        """One set by name; an unknown name lists the valid ones."""
        try:
            return self._sets[name]
        except KeyError:
            raise ConfigError(f"unknown prompt set '{name}'", fix="use one of: " + ", ".join(self.names())) from None


@torch.no_grad()
def zero_shot_label_embeddings(backbone: Backbone, labels: Sequence[str], prompt_set: PromptSet) -> torch.Tensor:
    """Untuned label embeddings: per label, the mean of its L2-normalised template embeddings.

    This is CLIP's prompt-ensemble zero-shot classifier (open_clip ``build_zero_shot_classifier``),
    the frozen baseline of the benchmark.

    Returns:
        ``(C, D)`` L2-normalised embeddings on the backbone's device.
    """
    device = next(backbone.parameters()).device
    n_templates = len(prompt_set.templates)
    texts = [text for label in labels for text in prompt_set.texts(label)]
    outs = []
    for start in range(0, len(texts), TEXT_BATCH * n_templates):
        tokens = backbone.tokenize(texts[start : start + TEXT_BATCH * n_templates]).to(device)
        outs.append(F.normalize(backbone.encode_text(tokens).float(), dim=-1))
    emb = torch.cat(outs).view(len(labels), n_templates, -1).mean(dim=1)
    return F.normalize(emb, dim=-1)
