"""The Celery tasks called as functions (no broker, no eager mode): validation, wiring, retry policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import workers.tasks  # noqa: F401 - registers the shared tasks
from state.contracts import EMBED, PREDICT, EmbedResult, ImageRef, PredictRequest, PredictResult
from state.settings import Settings
from workers.celery_app import make_celery
from workers.errors import RequestError, TransientError
from workers.runtime import runtime_for


@pytest.fixture
def app(settings: Settings):
    app = make_celery(settings, include=[])
    yield app
    runtime_for(app).close()


def test_predict_task_returns_the_result_as_json(app, image_dir: Path) -> None:
    refs = [ImageRef(key=p.stem, url=str(p), task_id=i) for i, p in enumerate(sorted(image_dir.glob("*.png")))]
    payload = PredictRequest(labels=["cat", "dog"], images=refs, project=2).model_dump(mode="json")
    out = app.tasks[PREDICT](**payload)
    json.dumps(out)  # what the result backend stores
    result = PredictResult.model_validate(out)
    assert result.model_version == "tiny-v1" and [i.task_id for i in result.items] == list(range(6))
    assert app.tasks[PREDICT](**payload) == out  # idempotent


def test_embed_task(app, image_dir: Path) -> None:
    refs = [{"key": p.stem, "url": str(p)} for p in sorted(image_dir.glob("*.png"))]
    result = EmbedResult.model_validate(app.tasks[EMBED](images=refs, project=None))
    assert len(result.items) == 6 and not any(item.cached for item in result.items)


def test_invalid_payload_is_a_permanent_error(app) -> None:
    with pytest.raises(RequestError, match="PredictRequest payload is invalid"):
        app.tasks[PREDICT](labels=[], images=[])
    with pytest.raises(RequestError):
        app.tasks[PREDICT](labels=["a", "a"], images=[{"key": "1", "url": "/x.png"}])


def test_unknown_fields_are_ignored(app, image_dir: Path) -> None:
    path = sorted(image_dir.glob("*.png"))[0]
    out = app.tasks[PREDICT](labels=["a"], images=[{"key": "1", "url": str(path)}], sent_by_a_newer_backend=True)
    assert PredictResult.model_validate(out).items[0].scores is not None


def test_retry_policy_and_routing(app) -> None:
    task = app.tasks[PREDICT]
    assert task.autoretry_for == (TransientError,) and task.max_retries == 3
    assert app.conf.task_routes[PREDICT]["queue"] == "predict"
    # One runtime per app and process: models are loaded once, not per task.
    assert task.runtime is app.tasks[EMBED].runtime is runtime_for(app)


def test_worker_errors_survive_pickling() -> None:
    import pickle

    from workers.errors import MediaError

    err = pickle.loads(pickle.dumps(MediaError("gone", reason="not_found", fix="upload it")))
    assert err.reason == "not_found" and err.message == "Gone. Fix: Upload it."


def test_probe_image_reads_and_decodes_one_image_without_the_model(app, image_dir: Path) -> None:
    from state.contracts import PROBE_IMAGE, ProbeResult

    path = sorted(image_dir.glob("*.png"))[0]
    ok = ProbeResult.model_validate(app.tasks[PROBE_IMAGE](image={"key": "7", "url": str(path), "task_id": 7}))
    assert ok.error is None and ok.local and ok.source == str(path)
    assert (ok.width, ok.height) == (48, 40) and ok.size_bytes == path.stat().st_size
    assert not runtime_for(app)._models  # no model was loaded for it

    missing = app.tasks[PROBE_IMAGE](image={"key": "8", "url": str(image_dir / "gone.png")})
    failed = ProbeResult.model_validate(missing)
    assert failed.error is not None and failed.error.reason == "not_found" and failed.width == 0
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-not-really")
    broken = ProbeResult.model_validate(
        app.tasks[PROBE_IMAGE](image={"key": "9", "url": str(image_dir / "broken.png")})
    )
    assert broken.error is not None and broken.error.reason == "corrupt"
    assert app.conf.task_routes[PROBE_IMAGE]["queue"] == "predict"


def test_a_worker_describes_what_it_serves(app, settings: Settings) -> None:
    from workers.control import describe_worker

    info = describe_worker(app)

    assert info["base_version"] == "tiny-v1" and info["demo_model"] is False
    assert info["models_dir"] == str(settings.models_dir) and info["home"] == str(settings.home)
    assert json.dumps(info)  # a broadcast reply is JSON
