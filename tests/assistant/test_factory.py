"""The backbone factory: specs, weights, errors, and both model libraries behind one interface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from assistant.errors import ConfigError, ModelLoadError
from assistant.factory import BackboneSpec, create_backbone, list_model_configs, register_model_config


@pytest.mark.parametrize(
    ("text", "kind", "name", "pretrained"),
    [
        ("ViT-B-16:laion2b_s34b_b88k", "open_clip", "ViT-B-16", "laion2b_s34b_b88k"),
        ("ViT-B-16:/w/model.bin", "open_clip", "ViT-B-16", "/w/model.bin"),
        ("ViT-B-32", "open_clip", "ViT-B-32", None),
        ("hf:/models/clip", "hf", "/models/clip", None),
        ("local-dir:/models/oc", "open_clip_dir", "/models/oc", None),
    ],
)
def test_spec_parse_round_trip(text, kind, name, pretrained):
    spec = BackboneSpec.parse(text)
    assert (spec.kind, spec.name, spec.pretrained) == (kind, name, pretrained)
    assert BackboneSpec.parse(str(spec)) == spec


def test_random_weights_need_explicit_permission():
    with pytest.raises(ModelLoadError, match="(?i)without weights") as info:
        create_backbone("test-tiny")
    assert "Fix:" in info.value.message


def test_unknown_architecture_names_the_fix():
    with pytest.raises(ConfigError, match="(?i)unknown open_clip architecture"):
        create_backbone("no-such-arch:some_tag")


def test_missing_pretrained_tag_fails_fast_with_fix():
    # HF_HUB_OFFLINE=1 (autouse fixture): the download fails at once, never a random model.
    with pytest.raises(ModelLoadError, match="(?i)could not load the weights") as info:
        create_backbone("test-tiny:no_such_tag")
    assert "local file" in info.value.message


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(ModelLoadError):
        create_backbone(f"test-tiny:{tmp_path / 'absent.bin'}")


def _save_open_clip_dir(directory: Path, seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    backbone = create_backbone("test-tiny", allow_random=True)
    cfg = json.loads((Path(__file__).parents[2] / "assistant/model_configs/test-tiny.json").read_text())
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    state = {k: v.contiguous().clone() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return backbone


def test_local_dir_loads_the_saved_weights(tmp_path):
    original = _save_open_clip_dir(tmp_path)
    loaded = create_backbone(f"local-dir:{tmp_path}")
    assert loaded.version.startswith("sha256:")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(x).global_emb, original.encode_image(x).global_emb)
    # A bare directory path is recognised too.
    assert BackboneSpec.parse(str(tmp_path)).kind == "open_clip_dir"


def test_weights_file_with_architecture_name(tmp_path):
    original = _save_open_clip_dir(tmp_path)
    torch.save(original.model.state_dict(), tmp_path / "weights.bin")
    loaded = create_backbone(f"test-tiny:{tmp_path / 'weights.bin'}")
    tokens = loaded.tokenize(["a red apple"])
    torch.testing.assert_close(loaded.encode_text(tokens), original.encode_text(tokens))


def test_local_dir_without_weights_is_refused(tmp_path):
    cfg = json.loads((Path(__file__).parents[2] / "assistant/model_configs/test-tiny.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    with pytest.raises(ModelLoadError):
        create_backbone(f"local-dir:{tmp_path}")


def test_register_model_config_from_json(tmp_path):
    cfg = json.loads((Path(__file__).parents[2] / "assistant/model_configs/test-tiny.json").read_text())
    cfg["embed_dim"] = 24
    path = tmp_path / "my-custom-tiny.json"
    path.write_text(json.dumps(cfg))
    register_model_config(path)
    assert "my-custom-tiny" in list_model_configs()
    assert create_backbone("my-custom-tiny", allow_random=True).embed_dim == 24


def test_open_clip_backbone_matches_open_clip(tiny_loaded):
    backbone = tiny_loaded.model.backbone
    x = torch.randn(3, 3, 32, 32)
    feats = backbone.encode_image(x)
    model = backbone.model
    torch.testing.assert_close(feats.global_emb, model.encode_image(x))
    # Patches go through the visual projection: the joint space's width, not the tower's.
    assert feats.patches is not None and feats.patches.shape == (3, 16, backbone.embed_dim)
    tokens = backbone.tokenize(["there is a cat in the scene", "dog"])
    torch.testing.assert_close(backbone.encode_text(tokens), model.encode_text(tokens))


def test_hf_backbone_matches_transformers(hf_tiny_dir):
    backbone = create_backbone(f"hf:{hf_tiny_dir}")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        backbone.encode_image(x).global_emb, backbone.model.get_image_features(pixel_values=x).pooler_output
    )
    tokens = backbone.tokenize(["there is a cat in the scene", "a dog"])
    width = int(tokens.argmax(dim=1).max()) + 1
    reference = backbone.model.get_text_features(input_ids=tokens[:, :width]).pooler_output
    torch.testing.assert_close(backbone.encode_text(tokens), reference)
    assert backbone.version.startswith("sha256:")


def test_hf_and_open_clip_tokenizers_agree(hf_tiny_dir, tiny_loaded):
    hf = create_backbone(f"hf:{hf_tiny_dir}")
    texts = ["There is a traffic light in the scene.", "café au lait", "a 3-d render"]
    assert torch.equal(hf.tokenize(texts)[:, :20], tiny_loaded.model.backbone.tokenize(texts)[:, :20])


class _RunsCodeWhenUnpickled:
    """A pickle payload that leaves a marker file if anything ever unpickles it with full pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _hf_copy(hf_tiny_dir: Path, target: Path, *, safetensors: bool, evil_bin: bool) -> Path:
    import pickle
    import shutil

    shutil.copytree(hf_tiny_dir, target)
    if not safetensors:
        for file in target.glob("*.safetensors"):
            file.unlink()
    if evil_bin:
        (target / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(target.parent / "pwned")))
    return target


def test_hf_directory_with_only_pickled_weights_is_refused(hf_tiny_dir, tmp_path):
    # Real pickled weights too (a torch.save of the same model): refused all the same.
    plain = _hf_copy(hf_tiny_dir, tmp_path / "plain-bin", safetensors=False, evil_bin=False)
    model = create_backbone(f"hf:{hf_tiny_dir}").model
    torch.save(model.state_dict(), plain / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        create_backbone(f"hf:{plain}")
    message = info.value.message
    assert "no safetensors weights" in message and "pytorch_model.bin" in message  # what
    assert "run code" in message  # why
    assert "save_pretrained" in message and "model.safetensors" in message  # the fix

    evil = _hf_copy(hf_tiny_dir, tmp_path / "evil-bin", safetensors=False, evil_bin=True)
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        create_backbone(f"hf:{evil}")
    assert not (tmp_path / "pwned").exists()
    # A directory without any weights says what is missing.
    empty = _hf_copy(hf_tiny_dir, tmp_path / "no-weights", safetensors=False, evil_bin=False)
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors in it"):
        create_backbone(f"hf:{empty}")


def test_hf_pickle_next_to_safetensors_is_never_unpickled(hf_tiny_dir, tmp_path):
    both = _hf_copy(hf_tiny_dir, tmp_path / "both", safetensors=True, evil_bin=True)
    backbone = create_backbone(f"hf:{both}")
    reference = create_backbone(f"hf:{hf_tiny_dir}")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(backbone.encode_image(x).global_emb, reference.encode_image(x).global_emb)
    assert not (tmp_path / "pwned").exists()
    # The payload is live: full pickle would have run it (so the test can fail).
    import pickle

    pickle.loads((both / "pytorch_model.bin").read_bytes())
    assert (tmp_path / "pwned").exists()
