"""The backbone registry: the kinds of model a spec can name, keyed by the spec's scheme.

Like the selection strategies' registry (:mod:`assistant.selection.registry`): kinds register
when :mod:`assistant.backbones` is imported (:mod:`assistant.backbones.kinds`), a name or scheme
registered twice warns, and an unknown name raises an error that lists the valid ones.

A spec is ``SCHEME:REST`` for a kind with a scheme (``hf:DIR``, ``local-dir:DIR``), a plain
directory (the kind whose ``directory_marker`` file it holds), or else the one kind without a
scheme (``NAME[:TAG]``, open_clip). :class:`BackboneSpec` (here, beside the kinds it names) parses
and prints specs through this registry and :func:`assistant.factory.create_backbone` builds through it, so
a new kind touches no ``if kind == ...`` anywhere.

Light on purpose (stdlib only): ``assistant --help`` lists the kinds without importing torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from assistant.errors import ConfigError

if TYPE_CHECKING:
    from assistant.backbone import Backbone

__all__ = [
    "BACKBONE_KINDS",
    "BackboneKind",
    "BackboneSpec",
    "backbone_kind",
    "default_kind",
    "describe_backbone_kinds",
    "kind_for_directory",
    "kind_for_scheme",
    "list_backbone_kinds",
    "register_backbone_kind",
]


@dataclass(frozen=True)
class BackboneKind:
    """One kind of model a spec can name, and how to build it.

    Attributes:
        name: The spec's ``kind`` (``open_clip``, ``open_clip_dir``, ``hf``).
        scheme: The spec's prefix before ``:`` (``hf``, ``local-dir``); None for the one default
            kind, whose specs are ``NAME[:TAG]``.
        summary: One line for ``--help``.
        example: A spec of this kind, for ``--help`` and error messages.
        build: Builds the backbone from a spec of this kind (imports its library when called).
        weight_files: The files a spec's weights are read from (hashed into the version).
        directory: Whether the spec's ``name`` is a local model directory (it may carry a
            calibration prior, ``calibration.json``, next to the weights).
        directory_marker: A plain directory holding this file is a spec of this kind.
    """

    name: str
    scheme: str | None
    summary: str
    example: str
    build: Callable[[BackboneSpec], Backbone]
    weight_files: Callable[[BackboneSpec], list[Path]]
    directory: bool = False
    directory_marker: str | None = None


_registry: dict[str, BackboneKind] = {}
#: Read-only view of the registered kinds, name -> kind.
BACKBONE_KINDS: MappingProxyType[str, BackboneKind] = MappingProxyType(_registry)


def register_backbone_kind(kind: BackboneKind) -> BackboneKind:
    """Register a kind under its name (warns when its name or scheme is taken; the last one wins)."""
    clash = [k.name for k in _registry.values() if k.name == kind.name or k.scheme == kind.scheme]
    if clash:
        warnings.warn(f"backbone kind {kind.name!r} clashes with {clash}; the last one wins", stacklevel=2)
        for name in clash:
            _registry.pop(name, None)
    _registry[kind.name] = kind
    return kind


def list_backbone_kinds() -> list[str]:
    """Registered kind names, in registration order (the order directories are recognised in)."""
    return list(_registry)


def backbone_kind(name: str) -> BackboneKind:
    """The kind registered as ``name``.

    Raises:
        ConfigError: No such kind; the message lists the registered ones.
    """
    kind = _registry.get(name)
    if kind is None:
        raise ConfigError(f"unknown backbone kind {name!r}", fix="use one of: " + ", ".join(list_backbone_kinds()))
    return kind


def kind_for_scheme(scheme: str) -> BackboneKind | None:
    """The kind whose specs start with ``scheme:``, or None."""
    return next((k for k in _registry.values() if k.scheme is not None and k.scheme == scheme), None)


def kind_for_directory(directory: Path) -> BackboneKind | None:
    """The first kind (registration order) whose marker file ``directory`` holds, or None."""
    for kind in _registry.values():
        if kind.directory_marker and (directory / kind.directory_marker).is_file():
            return kind
    return None


def default_kind() -> BackboneKind:
    """The kind of a spec with no registered scheme (``NAME[:TAG]``)."""
    kind = next((k for k in _registry.values() if k.scheme is None), None)
    if kind is None:
        raise ConfigError("no backbone kind takes a plain NAME[:TAG] spec", fix="register one with scheme=None")
    return kind


def describe_backbone_kinds() -> dict[str, str]:
    """An example spec of each kind -> what it names (the CLI's help)."""
    return {k.example: k.summary for k in _registry.values()}


@dataclass(frozen=True)
class BackboneSpec:
    """What to build.

    Attributes:
        kind: A registered backbone kind (``assistant.backbones.list_backbone_kinds()``):
            ``open_clip`` (an architecture name, with a pretrained tag or weights file),
            ``open_clip_dir`` (an open_clip model directory: ``open_clip_config.json`` + weights),
            ``hf`` (a Hugging Face CLIP model directory).
        name: Architecture name, or the directory for the directory kinds.
        pretrained: Pretrained tag or local weights file (the default kind only); None = no weights.
    """

    kind: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        """Parse ``SCHEME:REST`` (``hf:DIR``, ``local-dir:DIR``), a model ``DIR``, or ``NAME[:TAG]``."""
        text = text.strip()
        if not text:
            raise ConfigError("the model spec is empty", fix="pass e.g. 'ViT-B-16:laion2b_s34b_b88k' or a directory")
        scheme, sep, rest = text.partition(":")
        kind = kind_for_scheme(scheme) if sep else None
        if kind is not None:
            return cls(kind.name, rest)
        if Path(text).is_dir():
            found = kind_for_directory(Path(text))
            if found is None:
                markers = [k.directory_marker for k in _registry.values() if k.directory_marker]
                raise ConfigError(
                    f"the model directory {text} holds none of the files that say what it is",
                    why="looked for " + ", ".join(markers),
                    fix="point at an open_clip model directory, or prefix a Hugging Face CLIP directory with 'hf:'",
                )
            return cls(found.name, text)
        name, sep, pretrained = text.partition(":")
        return cls(default_kind().name, name, pretrained if sep else None)

    @property
    def backbone_kind(self) -> BackboneKind:
        """The registered kind (raises ``ConfigError`` for an unknown one)."""
        return backbone_kind(self.kind)

    def __str__(self) -> str:
        scheme = self.backbone_kind.scheme
        if scheme is not None:
            return f"{scheme}:{self.name}"
        return self.name if self.pretrained is None else f"{self.name}:{self.pretrained}"

    @property
    def has_weights(self) -> bool:
        """Whether the spec names real weights (a model directory, or a name with a tag or file)."""
        return self.backbone_kind.directory or self.pretrained is not None
