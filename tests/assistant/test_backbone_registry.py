"""The backbone registry: specs parse, print and build through the kind their scheme names."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.backbones import BACKBONE_KINDS, BackboneKind, backbone_kind, describe_backbone_kinds
from assistant.backbones import registry as backbone_registry
from assistant.errors import ConfigError
from assistant.factory import BackboneSpec, create_backbone


def test_every_example_parses_back_to_its_kind() -> None:
    assert list(BACKBONE_KINDS) == ["open_clip", "open_clip_dir", "hf"]
    for kind in BACKBONE_KINDS.values():
        assert BackboneSpec.parse(kind.example).kind == kind.name
    assert set(describe_backbone_kinds()) == {k.example for k in BACKBONE_KINDS.values()}


def test_an_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="open_clip, open_clip_dir, hf"):
        backbone_kind("timm")
    with pytest.raises(ConfigError, match="(?i)unknown backbone kind"):
        str(BackboneSpec("timm", "x"))


def test_a_directory_without_a_marker_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="open_clip_config.json, config.json"):
        BackboneSpec.parse(str(tmp_path))


def test_a_registered_kind_is_parsed_printed_and_built_without_touching_the_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[BackboneSpec] = []

    def build(spec: BackboneSpec):
        built.append(spec)
        return create_backbone("test-tiny", allow_random=True)

    kind = BackboneKind("tiny", "tiny", "a test model", "tiny:any", build, lambda spec: [], directory=True)
    monkeypatch.setitem(backbone_registry._registry, "tiny", kind)  # restored after the test

    spec = BackboneSpec.parse("tiny:any")
    assert (spec.kind, spec.name, str(spec), spec.has_weights) == ("tiny", "any", "tiny:any", True)
    backbone = create_backbone(spec)
    assert built == [spec] and backbone.spec == "tiny:any" and backbone.version == "tiny:any"


def test_registering_a_taken_scheme_warns() -> None:
    kind = BACKBONE_KINDS["hf"]
    with pytest.warns(UserWarning, match="clashes"):
        backbone_registry.register_backbone_kind(kind)
    assert BACKBONE_KINDS["hf"] is kind and list(BACKBONE_KINDS)[-1] == "hf"
