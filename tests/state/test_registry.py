"""The model registry: base version, registration, promote/rollback, crash safety, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from state.registry import Registry, RegistryError, derive_base_version
from tests.conftest import REPO_ROOT


def _fake_checkpoint(directory: Path, version: str, sha: str = "abc", **sidecar: object) -> Path:
    # The registry reads only the sidecar JSON: no weights needed to test it.
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"weights-" + sha.encode())
    doc = {"version": version, "tensors_sha256": sha, "image_tower_version": "tower1", **sidecar}
    (directory / "sidecar.json").write_text(json.dumps(doc))
    return directory


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return _fake_checkpoint(tmp_path / "base", "base-v0", metrics={"map": 0.4})


@pytest.fixture
def registry(tmp_path: Path, base_dir: Path) -> Registry:
    return Registry(tmp_path / "models", str(base_dir))


def test_base_version_from_checkpoint_sidecar(registry: Registry, base_dir: Path) -> None:
    assert registry.base_version() == "base-v0"
    record = registry.current(7)
    assert record.is_base and record.version == "base-v0" and record.checkpoint == str(base_dir)
    assert record.metrics == {"map": 0.4}
    assert registry.current(None).version == "base-v0"
    assert registry.path_of("base-v0") == base_dir


def test_base_version_from_spec_is_deterministic(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models", "ViT-B-16:laion2b_s34b_b88k")
    version = reg.base_version()
    assert version == derive_base_version("ViT-B-16:laion2b_s34b_b88k") == reg.base_version()
    assert version.startswith("base-") and version != derive_base_version("ViT-B-32")
    assert reg.source_of(version) == "ViT-B-16:laion2b_s34b_b88k"
    with pytest.raises(RegistryError, match="no checkpoint directory"):
        reg.path_of(version)


def test_register_copies_atomically_and_records_lineage(registry: Registry, tmp_path: Path) -> None:
    src = _fake_checkpoint(tmp_path / "cand", "mkt-1", round_id="r1", data_manifest_hash="m1", metrics={"map": 0.5})
    record = registry.register(src, parent="base-v0", project=3)
    assert record.version == "mkt-1" and record.parent == "base-v0" and record.project == "3"
    assert record.round_id == "r1" and record.manifest_hash == "m1" and record.metrics == {"map": 0.5}
    assert record.image_tower_version == "tower1"
    path = registry.path_of("mkt-1")
    assert path == tmp_path / "models" / "versions" / "mkt-1"
    assert (path / "model.safetensors").read_bytes() == b"weights-abc" and src.exists()
    assert registry.get("mkt-1") == record
    assert [r.version for r in registry.list_versions()] == ["mkt-1"]
    assert registry.list_versions(project=3) == [record] and registry.list_versions(project=4) == []
    # Registering the same checkpoint again is a no-op; other weights under the same id are refused.
    assert registry.register(src, project=3) == record
    other = _fake_checkpoint(tmp_path / "other", "mkt-1", sha="different")
    with pytest.raises(RegistryError, match="already registered with other weights"):
        registry.register(other)


def test_register_move(registry: Registry, tmp_path: Path) -> None:
    src = _fake_checkpoint(tmp_path / "cand", "mkt-2")
    registry.register(src, move=True)
    assert not src.exists() and registry.path_of("mkt-2").is_dir()


def test_register_refuses_bad_input(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="not a checkpoint directory"):
        registry.register(tmp_path / "empty")
    with pytest.raises(RegistryError, match="(?i)invalid model version id"):
        registry.register(_fake_checkpoint(tmp_path / "evil", "../../etc"))
    with pytest.raises(RegistryError, match="(?i)invalid project id"):
        registry.register(_fake_checkpoint(tmp_path / "ok", "mkt-3"), project="a/b")


def test_crash_during_register_leaves_nothing(registry: Registry, tmp_path: Path, monkeypatch) -> None:
    src = _fake_checkpoint(tmp_path / "cand", "mkt-4")

    def broken_copy(a: Path, b: Path) -> None:
        Path(b).mkdir()
        (Path(b) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        registry.register(src)
    versions = tmp_path / "models" / "versions"
    assert list(versions.iterdir()) == []
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.get("mkt-4")


def test_promote_rollback_and_history(registry: Registry, tmp_path: Path) -> None:
    for v in ("mkt-a", "mkt-b", "mkt-c"):
        registry.register(_fake_checkpoint(tmp_path / v, v, sha=v), project=1)
    registry.promote(1, "mkt-a")
    registry.promote(1, "mkt-b")
    registry.promote(1, "mkt-b")  # idempotent: no new history line
    registry.promote(1, "mkt-c")
    assert registry.current(1).version == "mkt-c"
    assert registry.current(2).version == "base-v0"  # other projects are untouched
    assert registry.rollback(1).version == "mkt-b"
    assert registry.rollback(1).version == "mkt-a"
    assert registry.rollback(1).version == "base-v0"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(1)
    events = [(e.event, e.previous, e.version) for e in registry.history(1)]
    assert events == [
        ("promote", "base-v0", "mkt-a"),
        ("promote", "mkt-a", "mkt-b"),
        ("promote", "mkt-b", "mkt-c"),
        ("rollback", "mkt-c", "mkt-b"),
        ("rollback", "mkt-b", "mkt-a"),
        ("rollback", "mkt-a", "base-v0"),
    ]
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.promote(1, "mkt-zzz")
    with pytest.raises(RegistryError, match="(?i)project is required"):
        registry.promote(None, "mkt-a")


def test_failed_pointer_write_keeps_the_old_pointer(registry: Registry, tmp_path: Path, monkeypatch) -> None:
    for v in ("mkt-a", "mkt-b"):
        registry.register(_fake_checkpoint(tmp_path / v, v, sha=v))
    registry.promote(5, "mkt-a")

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        registry.promote(5, "mkt-b")
    monkeypatch.undo()
    assert registry.current(5).version == "mkt-a"
    pointer_dir = tmp_path / "models" / "projects" / "5"
    assert sorted(p.name for p in pointer_dir.iterdir()) == ["current.json", "history.jsonl"]


def test_torn_history_line_is_skipped(registry: Registry, tmp_path: Path) -> None:
    registry.register(_fake_checkpoint(tmp_path / "a", "mkt-a"))
    registry.promote(6, "mkt-a")
    with open(tmp_path / "models" / "projects" / "6" / "history.jsonl", "a") as fh:
        fh.write('{"event": "prom')
    assert [e.version for e in registry.history(6)] == ["mkt-a"]


_PROMOTER = """
import sys
from state.registry import Registry
reg = Registry(sys.argv[1], sys.argv[2])
for i in range(15):
    reg.promote(9, sys.argv[3 + i % 2])
"""


def test_concurrent_promotions_from_processes(registry: Registry, tmp_path: Path, base_dir: Path) -> None:
    for v in ("mkt-a", "mkt-b", "mkt-c", "mkt-d"):
        registry.register(_fake_checkpoint(tmp_path / v, v, sha=v))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, str(registry.root), str(base_dir), *pair],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
        )
        for pair in (("mkt-a", "mkt-b"), ("mkt-c", "mkt-d"), ("mkt-b", "mkt-c"))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    events = registry.history(9)
    # Every line is whole, each event starts where the previous one ended, and the pointer agrees.
    assert len(events) >= 3
    for before, after in zip(events, events[1:], strict=False):
        assert after.previous == before.version
    assert registry.current(9).version == events[-1].version
    pointer = json.loads((registry.root / "projects" / "9" / "current.json").read_text())
    assert len(pointer["previous"]) == len(events) - 1
