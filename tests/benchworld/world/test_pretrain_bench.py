"""World pretraining and the benchmark table, on a few steps and a few images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from assistant.config import Stage1Config, Stage2Config
from assistant.errors import ConfigError
from assistant.factory import create_backbone
from benchworld.world import generate_split
from benchworld.world.bench import BenchConfig, frozen_scores, run_bench
from benchworld.world.config import WorldConfig
from benchworld.world.pretrain import PretrainConfig, pretrain, save_open_clip_dir, stream_hash


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    cfg = PretrainConfig(steps=3, batch_size=16, warmup_steps=1, loader_workers=0)
    backbone, result = pretrain(cfg)
    out = tmp_path_factory.mktemp("world") / "world-tiny"
    save_open_clip_dir(backbone, cfg.arch, out, {"pairs": result.pairs, "training_curve": result.curve})
    return backbone, result, out, cfg


def test_pretraining_runs_and_saves_an_ordinary_open_clip_dir(pretrained):
    backbone, result, out, cfg = pretrained
    assert result.steps == 3 and result.pairs == 48 and not result.stopped_early
    assert result.curve and result.curve[-1]["step"] == 3 and np.isfinite(result.curve[-1]["loss"])
    assert {p.name for p in out.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors", "manifest.json"}
    loaded = create_backbone(f"local-dir:{out}")  # through the same factory as any real checkpoint
    # Shipped in fp16 (half the file), loaded back into the fp32 model: equal up to fp16 rounding.
    with safe_open(str(out / "open_clip_model.safetensors"), framework="pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys() if weights.get_tensor(k).is_floating_point()}
    assert dtypes == {torch.float16}
    assert next(loaded.model.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(
        loaded.encode_image(x).global_emb, backbone.encode_image(x).global_emb, atol=5e-3, rtol=0.0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"] == "world-tiny" and manifest["generator_version"].startswith("world-")
    assert manifest["weights_dtype"] == "float16"


def test_pretraining_changes_the_weights_and_is_seeded():
    cfg = PretrainConfig(steps=2, batch_size=8, warmup_steps=1, loader_workers=0)
    a, _ = pretrain(cfg)
    b, _ = pretrain(cfg)
    torch.manual_seed(cfg.seed)
    init = create_backbone(cfg.arch, allow_random=True)
    pa, pb, p0 = (m.model.visual.proj.detach() for m in (a, b, init))
    assert torch.equal(pa, pb)  # same seed, same data, same result
    assert not torch.equal(pa, p0)  # and training moved it


def test_stream_hash_identifies_the_data():
    cfg = PretrainConfig()
    assert stream_hash(WorldConfig(), cfg, 32) == stream_hash(WorldConfig(), cfg, 32)
    assert stream_hash(WorldConfig(seed=1), cfg, 32) != stream_hash(WorldConfig(), cfg, 32)
    assert stream_hash(WorldConfig(), PretrainConfig(steps=10), 32) != stream_hash(WorldConfig(), cfg, 32)


def test_bad_pretraining_config():
    with pytest.raises(ConfigError):
        pretrain(PretrainConfig(steps=0))
    with pytest.raises(ConfigError, match="(?i)px"):
        pretrain(PretrainConfig(arch="test-tiny", steps=1, batch_size=4, loader_workers=0))


def test_bench_table_has_every_method_and_setting(pretrained):
    _, _, out, _ = pretrained
    splits = {name: generate_split(name, n) for name, n in (("train", 96), ("val", 48), ("test", 96))}
    cfg = BenchConfig(
        stage1=Stage1Config(epochs=1, batch_size=32, warmup_epochs=0),
        stage2=Stage2Config(epochs=1, batch_size=32),
    )
    result, mkt = run_bench(splits, f"local-dir:{out}", cfg)
    assert [r.method for r in result.rows] == ["random", "frozen zero-shot", "MKT stage 1", "MKT stage 1 + 2"]
    for row in result.rows:
        for setting in (row.zsl, row.gzsl):
            assert set(setting) == {"mAP", "F1@3", "P@3", "R@3", "F1@5", "P@5", "R@5"}
            assert all(0.0 <= v <= 100.0 for v in setting.values())
        assert len(row.per_label) == 65
    assert result.selection["stage1"]["chosen_distill_weight"] == 1.0
    assert result.data["sizes"] == {"train": 96, "val": 48, "test": 96} and len(result.data["unseen"]) == 16
    # The trained model knows the seen labels and carries a calibrator fitted on validation.
    assert len(mkt.model.seen_labels) == 49 and mkt.calibrator.method == "platt"
    # The margin over the frozen model is the difference of the two rows, with an interval around it.
    rows = {r.method: r for r in result.rows}
    for mode in ("zsl", "gzsl"):
        margin = result.margins[mode]
        observed = getattr(rows["MKT stage 1 + 2"], mode)["mAP"] - getattr(rows["frozen zero-shot"], mode)["mAP"]
        assert margin["difference"] == pytest.approx(observed, abs=0.01)
        assert margin["low"] <= margin["difference"] <= margin["high"]


def test_frozen_zero_shot_uses_the_class_token_only(pretrained):
    backbone, _, _, _ = pretrained
    from assistant.backbone import ImageFeatures

    feats = backbone.encode_image(torch.randn(3, 3, 64, 64))
    scores = frozen_scores(backbone, feats, ["zebra", "red"])
    shuffled = frozen_scores(backbone, ImageFeatures(feats.global_emb, feats.patches.flip(1)), ["zebra", "red"])
    np.testing.assert_allclose(scores, shuffled)  # patches play no part
    assert scores.shape == (3, 2)


def test_the_bundled_model_ships_in_fp16_and_loads_in_fp32():
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[3] / "assets" / "world-tiny"
    weights = bundled / "open_clip_model.safetensors"
    assert weights.stat().st_size < 20_000_000  # about half of the 31 MB fp32 file
    with safe_open(str(weights), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    manifest = json.loads((bundled / "manifest.json").read_text())
    assert manifest["weights_dtype"] == "float16"
    backbone = create_backbone(f"local-dir:{bundled}")
    assert next(backbone.model.parameters()).dtype == torch.float32
