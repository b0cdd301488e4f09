"""The score_pool pipeline and task on the tiny model: strategies over cached features, failures, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workers.tasks  # noqa: F401 - registers the shared tasks
from assistant.selection import SelectionPool, create_strategy
from state.contracts import SCORE_POOL, EmbedRequest, ImageRef, ScorePoolRequest, ScorePoolResult
from state.settings import Settings
from workers import pipeline
from workers.celery_app import make_celery
from workers.errors import RequestError
from workers.runtime import Runtime, runtime_for

LABELS = ["cat", "dog", "snow", "beach"]


def _refs(image_dir: Path) -> list[ImageRef]:
    return [ImageRef(key=str(i), url=str(p), task_id=100 + i) for i, p in enumerate(sorted(image_dir.glob("*.png")))]


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "entropy", "novelty", "diversity", "hybrid", "saving"])
def test_every_strategy_chooses_k_distinct_pool_images(runtime: Runtime, image_dir: Path, strategy: str) -> None:
    refs = _refs(image_dir)
    request = ScorePoolRequest(
        labels=LABELS, images=refs[:5], labeled=refs[5:], strategy=strategy, k=3, seed=4, project=1, break_even=0.5
    )
    result = pipeline.score_pool(runtime, request)
    assert result.strategy == strategy and result.model_version == "tiny-v1"
    assert [c.rank for c in result.chosen] == [1, 2, 3]
    assert len({c.key for c in result.chosen}) == 3 and {c.key for c in result.chosen} <= {r.key for r in refs[:5]}
    assert all(c.task_id == 100 + int(c.key) and c.reason for c in result.chosen)
    assert result.pool_size == 5 and not result.failed
    # The tiny model has trained on nothing: every label is novel unless the request says otherwise.
    assert result.novel_labels == LABELS
    again = pipeline.score_pool(runtime, request)  # deterministic (an idempotent task), now from the cache
    assert again.chosen == result.chosen and again.cached == 5 and result.cached == 0


def test_uncertainty_matches_the_strategy_on_the_same_scores(runtime: Runtime, image_dir: Path) -> None:
    refs = _refs(image_dir)
    result = pipeline.score_pool(
        runtime, ScorePoolRequest(labels=LABELS, images=refs, strategy="uncertainty", k=6, novel_labels=["snow"])
    )
    tagger = runtime.model("tiny-v1").tagger
    pics = [Image.open(p).convert("RGB") for p in sorted(image_dir.glob("*.png"))]
    feats = pipeline.to_image_features(pipeline.from_image_features(tagger.features(pics)))
    pool = SelectionPool.from_arrays(
        tagger.probabilities(feats, LABELS), tagger.calibrator.thresholds(LABELS), LABELS, novel_labels=["snow"]
    )
    expected = create_strategy("uncertainty").select(pool, 6)
    assert [c.key for c in result.chosen] == [str(i) for i in expected.indices]
    np.testing.assert_allclose([c.score for c in result.chosen], expected.scores, atol=1e-5)
    assert result.novel_labels == ["snow"]


def test_the_second_selection_is_served_from_the_feature_cache(runtime: Runtime, image_dir: Path) -> None:
    refs = _refs(image_dir)
    pipeline.embed(runtime, EmbedRequest(images=refs))
    result = pipeline.score_pool(runtime, ScorePoolRequest(labels=LABELS, images=refs, strategy="hybrid", k=2))
    assert result.cached == len(refs)


def test_failed_images_are_reported_and_never_chosen(runtime: Runtime, image_dir: Path) -> None:
    refs = [*_refs(image_dir)[:2], ImageRef(key="missing", url=str(image_dir / "nope.png"))]
    result = pipeline.score_pool(runtime, ScorePoolRequest(labels=LABELS, images=refs, strategy="entropy", k=3))
    assert [f.key for f in result.failed] == ["missing"] and result.failed[0].error is not None
    assert {c.key for c in result.chosen} == {"0", "1"}


def test_bad_requests_fail_fast(runtime: Runtime, image_dir: Path) -> None:
    refs = _refs(image_dir)
    with pytest.raises(RequestError, match="(?i)unknown selection strategy 'margin'"):
        pipeline.score_pool(runtime, ScorePoolRequest(labels=LABELS, images=refs, strategy="margin"))
    with pytest.raises(RequestError, match="(?i)novel labels"):
        pipeline.score_pool(runtime, ScorePoolRequest(labels=LABELS, images=refs, novel_labels=["unicorn"]))
    missing = [ImageRef(key="a", url=str(image_dir / "nope.png"))]
    with pytest.raises(RequestError, match="could be scored"):
        pipeline.score_pool(runtime, ScorePoolRequest(labels=LABELS, images=missing))


def test_the_task_validates_and_returns_json(settings: Settings, image_dir: Path) -> None:
    app = make_celery(settings, include=[])
    try:
        payload = ScorePoolRequest(labels=LABELS, images=_refs(image_dir), k=2).model_dump(mode="json")
        out = app.tasks[SCORE_POOL](**payload)
        json.dumps(out)
        assert len(ScorePoolResult.model_validate(out).chosen) == 2
        assert app.conf.task_routes[SCORE_POOL]["queue"] == "predict"
        with pytest.raises(RequestError, match="ScorePoolRequest payload is invalid"):
            app.tasks[SCORE_POOL](labels=["a", "a"], images=payload["images"])
    finally:
        runtime_for(app).close()
