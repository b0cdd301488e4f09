"""The predict/embed pipeline on the tiny model: scores, per-image failures, the cache, versions."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from state.contracts import EmbedRequest, ImageRef, PredictRequest
from state.registry import RegistryError
from state.settings import Settings
from tests.workers._helpers import worker_settings, write_images
from workers import pipeline
from workers.runtime import Runtime

LABELS = ["cat", "dog", "snow", "beach"]


def _refs(paths: list[Path]) -> list[ImageRef]:
    return [ImageRef(key=p.stem, url=str(p)) for p in paths]


def _count_encodes(runtime: Runtime, version: str = "tiny-v1") -> list[int]:
    """Wrap the model's encode to record how many images each call encodes."""
    tagger = runtime.model(version).tagger
    calls: list[int] = []
    original: Callable[[torch.Tensor], Any] = tagger.encode

    def counting(pixels: torch.Tensor) -> Any:
        calls.append(int(pixels.shape[0]))
        return original(pixels)

    tagger.encode = counting  # type: ignore[method-assign]
    return calls


def _scores(result: Any) -> dict[str, list[float]]:
    return {item.key: item.scores for item in result.items if item.scores is not None}


def test_predict_scores_every_image_in_order(runtime: Runtime, image_dir: Path, tmp_path: Path) -> None:
    images = sorted(image_dir.glob("*.png"))
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    refs = [
        *_refs(images[:3]),
        ImageRef(key="missing", url=str(image_dir / "nope.png")),
        ImageRef(key="broken", url=str(image_dir / "broken.png")),
        ImageRef(key="outside", url=str(tmp_path / "elsewhere.png")),
        ImageRef(key="badurl", url="ftp://x/y.png", task_id=5),
        *_refs(images[3:]),
    ]
    result = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, project=1))
    assert result.model_version == "tiny-v1" and result.labels == LABELS
    assert result.seen == [False] * 4 and result.thresholds == [0.5] * 4
    assert [item.key for item in result.items] == [r.key for r in refs]
    reasons = {item.key: item.error.reason for item in result.items if item.error}
    assert reasons == {"missing": "not_found", "broken": "corrupt", "outside": "forbidden", "badurl": "bad_url"}
    assert result.items[6].task_id == 5
    scores = _scores(result)
    assert len(scores) == 6 and all(len(s) == 4 and all(0 <= v <= 1 for v in s) for s in scores.values())

    # The same numbers as the model in-process on the same pictures (features through float16).
    tagger = runtime.model("tiny-v1").tagger
    pics = [Image.open(p).convert("RGB") for p in images]
    feats = pipeline.to_image_features(pipeline.from_image_features(tagger.features(pics)))
    expected = tagger.probabilities(feats, LABELS)
    got = np.array([scores[p.stem] for p in images])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert float(np.ptp(got)) > 0.01  # the comparison is not between constants


def test_repeat_request_is_served_from_the_cache(runtime: Runtime, image_dir: Path) -> None:
    request = PredictRequest(labels=LABELS, images=_refs(sorted(image_dir.glob("*.png"))))
    calls = _count_encodes(runtime)
    first = pipeline.predict(runtime, request)
    assert sum(calls) == 6 and max(calls) <= 4  # batches of settings.batch_size
    second = pipeline.predict(runtime, request)
    assert sum(calls) == 6  # nothing encoded again
    assert second == first  # idempotent: the very same result
    # A changed vocabulary costs text encoding only; old labels keep their scores.
    third = pipeline.predict(runtime, PredictRequest(labels=[*LABELS, "volcano"], images=request.images))
    assert sum(calls) == 6
    for key, scores in _scores(first).items():
        np.testing.assert_allclose(_scores(third)[key][:4], scores, atol=1e-6)


def test_same_content_at_a_new_location_is_found_by_hash(runtime: Runtime, image_dir: Path) -> None:
    original = sorted(image_dir.glob("*.png"))[0]
    pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs([original])))
    calls = _count_encodes(runtime)
    copy = image_dir / "copy.png"
    shutil.copy(original, copy)
    result = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs([copy])))
    assert calls == [] and result.items[0].scores is not None


def test_changed_file_is_downloaded_again(runtime: Runtime, image_dir: Path) -> None:
    path = sorted(image_dir.glob("*.png"))[0]
    first = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs([path])))
    calls = _count_encodes(runtime)
    Image.new("RGB", (30, 30), (250, 250, 0)).save(path)
    second = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs([path])))
    assert calls == [1] and _scores(second) != _scores(first)


def test_embed_fills_the_cache(runtime: Runtime, image_dir: Path) -> None:
    paths = sorted(image_dir.glob("*.png"))
    refs = [*_refs(paths), ImageRef(key="missing", url=str(image_dir / "nope.png"))]
    first = pipeline.embed(runtime, EmbedRequest(images=refs))
    assert first.model_version == "tiny-v1" and first.backbone_version == runtime.model("tiny-v1").tower_version
    assert [i.cached for i in first.items[:-1]] == [False] * 6
    assert first.items[0].content_hash == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert first.items[-1].error is not None and first.items[-1].error.reason == "not_found"
    again = pipeline.embed(runtime, EmbedRequest(images=refs))
    assert [i.cached for i in again.items[:-1]] == [True] * 6
    calls = _count_encodes(runtime)
    pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs(paths)))
    assert calls == []
    assert runtime.cache.stats().entries == 6


def test_project_versions_reload_and_lru(settings: Settings, tiny_checkpoint_v2: Path, image_dir: Path) -> None:
    runtime = Runtime(settings.model_copy(update={"model_cache_size": 1}))
    try:
        refs = _refs(sorted(image_dir.glob("*.png"))[:2])
        first = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, project=3))
        assert first.model_version == "tiny-v1"
        runtime.registry.register(tiny_checkpoint_v2, project=3)
        runtime.registry.promote(3, "tiny-v2")
        v2 = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, project=3))
        v1 = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, project=4))
        assert v2.model_version == "tiny-v2" and v1.model_version == "tiny-v1"
        assert _scores(v1) != _scores(v2)  # another image tower: features computed again, not reused
        assert runtime.loaded_versions() == ["tiny-v1"]  # LRU of one
        explicit = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, model_version="tiny-v2"))
        assert explicit.items == v2.items
        runtime.registry.rollback(3)
        back = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, project=3))
        assert back.model_version == "tiny-v1"
        with pytest.raises(RegistryError, match="not in the registry"):
            pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs, model_version="nope"))
    finally:
        runtime.close()


def test_out_of_memory_halves_the_device_batch(runtime: Runtime, image_dir: Path) -> None:
    tagger = runtime.model("tiny-v1").tagger
    original = tagger.encode
    failures = [True]

    def flaky(pixels: torch.Tensor) -> Any:
        if failures and failures.pop():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(pixels)

    tagger.encode = flaky  # type: ignore[method-assign]
    result = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs(sorted(image_dir.glob("*.png")))))
    assert tagger.batch_size == 2 and all(item.scores for item in result.items)


def test_an_unexpected_error_costs_one_image(runtime: Runtime, image_dir: Path, monkeypatch) -> None:
    paths = sorted(image_dir.glob("*.png"))
    fetch = runtime.fetcher.fetch

    def buggy(ref: ImageRef) -> bytes:
        if ref.key == paths[1].stem:
            raise RuntimeError("boom")
        return fetch(ref)

    monkeypatch.setattr(runtime.fetcher, "fetch", buggy)
    result = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs(paths)))
    failed = [item for item in result.items if item.error]
    assert len(failed) == 1 and failed[0].error.reason == "error" and "boom" in failed[0].error.message
    assert sum(item.scores is not None for item in result.items) == 5


def test_a_broken_cache_never_fails_a_batch(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = write_images(tmp_path / "imgs", 3)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "feature-cache").write_text("a file where the cache directory should be")
    settings = worker_settings(tmp_path / "home", tiny_checkpoint, media_local_roots=[tmp_path / "imgs"])
    runtime = Runtime(settings)
    try:
        result = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=_refs(images)))
        assert all(item.scores is not None for item in result.items)
    finally:
        runtime.close()


def test_images_over_http(runtime: Runtime, image_dir: Path) -> None:
    from tests.workers._helpers import serving

    with serving(image_dir) as server:
        settings = runtime.settings.model_copy(update={"media_allowed_hosts": ["127.0.0.1"]})
        over_http = Runtime(settings)
        try:
            names = sorted(p.name for p in image_dir.glob("*.png"))
            refs = [ImageRef(key=n, url=f"{server.url}/{n}") for n in names]
            result = pipeline.predict(over_http, PredictRequest(labels=LABELS, images=refs))
            assert all(item.scores is not None for item in result.items)
            # Re-tagging within the source TTL goes straight to the cache: no download at all.
            before = server.total_requests()
            pipeline.predict(over_http, PredictRequest(labels=["new label"], images=refs))
            assert server.total_requests() == before
        finally:
            over_http.close()


def test_entries_lost_after_lookup_are_fetched_again(runtime: Runtime, image_dir: Path, settings: Settings) -> None:
    request = PredictRequest(labels=LABELS, images=_refs(sorted(image_dir.glob("*.png"))))
    first = pipeline.predict(runtime, request)
    for segment in (settings.feature_cache_dir / "segments").glob("*/*.seg"):
        segment.unlink()  # evicted by another process after the index said "present"
    calls = _count_encodes(runtime)
    second = pipeline.predict(runtime, request)
    assert sum(calls) == 6 and second == first


def test_a_10000_label_vocabulary_is_scored(runtime: Runtime, image_dir: Path) -> None:
    # The reliability issue's largest vocabulary: every image gets one finite score in [0, 1] per
    # label, in the request's order, and a label scores the same in a 4- or a 10,000-label request.
    labels = [*LABELS, *(f"tag {i:05d}" for i in range(10_000 - len(LABELS)))]
    refs = _refs(sorted(image_dir.glob("*.png"))[:3])
    result = pipeline.predict(runtime, PredictRequest(labels=labels, images=refs))
    assert result.labels == labels and len(result.seen) == len(result.thresholds) == 10_000
    scores = np.array([item.scores for item in result.items])
    assert scores.shape == (3, 10_000) and np.isfinite(scores).all()
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    assert float(scores.std(axis=1).min()) > 0.0  # 10,000 labels, not one number repeated
    small = pipeline.predict(runtime, PredictRequest(labels=LABELS, images=refs))
    np.testing.assert_allclose(scores[:, :4], np.array([item.scores for item in small.items]), atol=1e-6)
