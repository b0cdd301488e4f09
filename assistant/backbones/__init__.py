"""Backbone implementations, one per model library, and the registry of the kinds a spec can name.

:func:`assistant.factory.create_backbone` builds through the registry
(:mod:`assistant.backbones.registry`); the built-in kinds register on import
(:mod:`assistant.backbones.kinds`). Importing this package does not import torch.
"""

from __future__ import annotations

from assistant.backbones import kinds  # registers the built-in kinds
from assistant.backbones.registry import (
    BACKBONE_KINDS,
    BackboneKind,
    backbone_kind,
    describe_backbone_kinds,
    list_backbone_kinds,
    register_backbone_kind,
)

__all__ = [
    "BACKBONE_KINDS",
    "BackboneKind",
    "backbone_kind",
    "describe_backbone_kinds",
    "kinds",
    "list_backbone_kinds",
    "register_backbone_kind",
]
