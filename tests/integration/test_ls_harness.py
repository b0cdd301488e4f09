"""Smoke test of the Label Studio harness against a real server.

Besides proving the harness works, it pins LS behaviour the design depends on:

- task media (uploads and local files) is served only with ``Authorization: Token <key>``;
- extra keys inside prediction result items (where the backend keeps per-tag scores and
  seen/novel marks) are stored verbatim, whether the prediction is posted to
  ``/api/predictions/`` or returned by an ML backend's ``/predict``, and come back in an export
  snapshot with predictions expanded;
- the plain JSON export (``as_json``, the UI's Export) lists predictions by id only;
- ``/predict`` keeps only ``result``, ``score`` and ``model_version`` of each prediction, so
  prediction-level extras are dropped on that path;
- a ``/predict`` entry that is an empty list gives its task no prediction (and LS sends that task
  again on the next retrieval), while an empty ``result`` is stored as a prediction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from backends.convert import build_predict_requests, predictions_from_results
from state.contracts import ImageFailure, ImageScores, PredictResult
from studio.config import parse_label_config
from studio.protocol import LSPredictRequest
from tests.integration.ls_harness import MULTILABEL_CONFIG, LSClient, LSServer, RecordingBackend

pytestmark = pytest.mark.integration

TAGS: dict[str, Any] = {
    "scores": {"giraffe": 0.91, "outdoor": 0.55, "dog": 0.04},
    "thresholds": {"giraffe": 0.5, "outdoor": 0.5, "dog": 0.5},
    "novel": ["outdoor"],
}


def _result(choices: list[str], **extra: Any) -> list[dict[str, Any]]:
    item = {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": choices}}
    return [{**item, **extra}]


@pytest.fixture(scope="module")
def photos(shared_datasets: Path) -> list[Path]:
    found = sorted((shared_datasets / "coco128" / "images" / "train2017").glob("*.jpg"))[:5]
    assert len(found) == 5, "coco128 should hold at least 5 training photos"
    return found


@dataclass(frozen=True)
class Project:
    id: int
    uploaded: list[int]
    local: list[int]


@pytest.fixture(scope="module")
def project(ls_server: LSServer, ls_client: LSClient, photos: list[Path]) -> Project:
    """A multi-label project with 3 uploaded and 2 local-files photos."""
    pid = ls_client.create_project(MULTILABEL_CONFIG)
    uploaded = ls_client.upload_images(pid, photos[:3])
    local = ls_client.import_local_files(pid, ls_server.document_root, photos[3:])
    return Project(pid, uploaded, local)


def test_server_is_isolated_and_fast_to_start(ls_server: LSServer) -> None:
    assert ls_server.url.startswith("http://127.0.0.1:")
    assert ls_server.process.poll() is None
    # The session's data dir is a copy of the template, never the template itself.
    assert ".cache" not in str(ls_server.config.data_dir)
    assert ls_server.document_root.is_dir()


def test_tasks_exist_for_uploads_and_local_files(ls_client: LSClient, project: Project) -> None:
    tasks = {task["id"]: task for task in ls_client.tasks(project.id)}

    assert sorted(tasks) == sorted(project.uploaded + project.local)
    assert all(tasks[tid]["data"]["image"].startswith(f"/data/upload/{project.id}/") for tid in project.uploaded)
    assert all(tasks[tid]["data"]["image"].startswith("/data/local-files/?d=images/") for tid in project.local)


def test_images_download_only_with_the_token(ls_client: LSClient, project: Project) -> None:
    for task in ls_client.tasks(project.id):
        url = task["data"]["image"]

        resp = ls_client.get_media(url)
        assert resp.status_code == 200, f"{url}: {resp.status_code} {resp.text[:200]}"
        with Image.open(io.BytesIO(resp.content)) as img:
            assert img.format == "JPEG"
            img.load()  # decodes the whole file, not just the header
            assert img.width > 0 and img.height > 0

        refused = ls_client.get_media(url, auth=False)
        assert refused.status_code in (401, 403), f"{url} served without a token: {refused.status_code}"


def test_extra_keys_in_result_items_survive_export(ls_client: LSClient, project: Project) -> None:
    task = project.uploaded[0]
    result = _result(["giraffe", "outdoor"], score=0.7, assistant=TAGS)
    created = ls_client.create_prediction(task, result, model_version="harness-v1+abcd1234", score=0.42)

    stored = ls_client.predictions(task=task)
    assert [p["result"][0]["assistant"] for p in stored if p["id"] == created["id"]] == [TAGS]

    exported = {t["id"]: t for t in ls_client.export_snapshot(project.id)}
    (pred,) = [p for p in exported[task]["predictions"] if p["id"] == created["id"]]
    assert pred["result"][0]["assistant"] == TAGS
    assert pred["result"][0]["score"] == pytest.approx(0.7)
    assert pred["score"] == pytest.approx(0.42)
    assert pred["model_version"] == "harness-v1+abcd1234"

    # The plain export (SDK as_json in Community, the UI's Export button) lists predictions by id.
    plain = {t["id"]: t for t in ls_client.export_json(project.id)}
    assert created["id"] in plain[task]["predictions"]


def test_predict_path_keeps_item_extras_and_drops_prediction_extras(ls_client: LSClient, project: Project) -> None:
    failed, tagged, untagged = [*project.local, project.uploaded[2]]
    answers: dict[int, Any] = {
        # An empty list gives a task no prediction while keeping len(results) == len(tasks).
        failed: [],
        tagged: {"result": _result(["dog"], assistant=TAGS), "score": 0.25, "model_version": "stub-v1",
                 "neighbors": {"not": "kept"}},
        untagged: {"result": [], "score": 0.9, "model_version": "stub-v1"},
    }  # fmt: skip

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        return {"results": [answers[task["id"]] for task in body["tasks"]]}

    with RecordingBackend(respond, model_version="stub-v1") as backend:
        ml_id = ls_client.connect_ml_backend(project.id, backend.url)
        try:
            ls_client.retrieve_predictions(project.id, [failed, tagged, untagged])
            # Only the task that got no prediction for this version is sent again.
            ls_client.retrieve_predictions(project.id, [failed, tagged, untagged])
        finally:
            ls_client.sdk.ml.delete(ml_id)

    setups = backend.bodies("/setup")
    assert setups and str(setups[0]["project"]).startswith(f"{project.id}.")
    first, second = backend.bodies("/predict")  # one batched call per retrieval
    assert sorted(t["id"] for t in first["tasks"]) == sorted([failed, tagged, untagged])  # LS orders by id
    assert [t["id"] for t in second["tasks"]] == [failed]

    def stub_predictions(task: int) -> list[dict[str, Any]]:
        return [p for p in ls_client.predictions(task=task) if p["model_version"] == "stub-v1"]

    assert stub_predictions(failed) == []
    (pred,) = stub_predictions(tagged)
    assert pred["result"][0]["assistant"] == TAGS
    assert pred["score"] == pytest.approx(0.25)
    assert pred["neighbors"] is None
    (empty,) = stub_predictions(untagged)
    assert empty["result"] == [] and empty["score"] == pytest.approx(0.9)


def test_annotations_round_trip_with_parent_prediction(ls_client: LSClient, project: Project) -> None:
    task = project.uploaded[1]
    pred = ls_client.create_prediction(task, _result(["giraffe", "dog"]), model_version="harness-v1+abcd1234")

    ann = ls_client.create_annotation(task, _result(["giraffe"]), parent_prediction=pred["id"])
    ls_client.update_annotation(ann["id"], _result(["giraffe", "person"]))

    exported = {t["id"]: t for t in ls_client.export_json(project.id)}
    (got,) = [a for a in exported[task]["annotations"] if a["id"] == ann["id"]]
    assert got["parent_prediction"] == pred["id"]
    assert got["result"][0]["value"]["choices"] == ["giraffe", "person"]


def test_personal_access_token_authenticates(ls_server: LSServer, ls_client: LSClient, project: Project) -> None:
    pat = ls_client.create_personal_access_token()
    assert pat.count(".") == 2, "a PAT is a JWT refresh token"

    with LSClient(ls_server.url, pat) as as_pat:
        assert as_pat.sdk.users.whoami().email == ls_server.username
        assert as_pat.headers()["Authorization"].startswith("Bearer ")
        task = as_pat.tasks(project.id)[0]
        assert as_pat.get_media(task["data"]["image"]).status_code == 200

    # The raw PAT is not an access token: sent as Bearer it is refused.
    raw = ls_client.http.get("/api/current-user/whoami", headers={"Authorization": f"Bearer {pat}"})
    assert raw.status_code == 401


TAXONOMY_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple">
    <Choice value="giraffe"/><Choice value="dog" predicted_values="dog,puppy"/><Choice value="outdoor"/>
  </Choices>
  <Taxonomy name="taxo" toName="image">
    <Choice value="Animal"><Choice value="Giraffe"/><Choice value="Dog"/></Choice>
    <Choice value="Scene"><Choice value="Outdoor"/></Choice>
  </Taxonomy>
</View>"""


def test_label_studio_stores_what_the_converters_produce(
    ls_server: LSServer, ls_client: LSClient, photos: list[Path]
) -> None:
    """Our /predict answer (Choices + Taxonomy, per-tag extras, one failed task) round-trips through LS."""
    vocab = parse_label_config(TAXONOMY_CONFIG)
    version = vocab.model_version("mkt-e2e-r0")
    pid = ls_client.create_project(TAXONOMY_CONFIG)
    task_ids = ls_client.upload_images(pid, photos[:3])
    broken = task_ids[2]

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        req = LSPredictRequest.model_validate(body)
        requests, failures = build_predict_requests(vocab, req.tasks, project=req.project)
        results = [
            PredictResult(
                model_version="mkt-e2e-r0",
                labels=r.labels,
                seen=[label != "puppy" for label in r.labels],
                thresholds=[0.5] * len(r.labels),
                items=[
                    ImageScores(key=i.key, task_id=i.task_id, error=ImageFailure(reason="corrupt", message="bad"))
                    if i.task_id == broken
                    else ImageScores(
                        key=i.key, task_id=i.task_id, scores=[0.9 if "iraffe" in lb else 0.2 for lb in r.labels]
                    )
                    for i in r.images
                ],
            )
            for r in requests
        ]
        return {"results": predictions_from_results(vocab, req.tasks, results, failures).ls_results()}

    with RecordingBackend(respond, model_version=version) as backend:
        ml_id = ls_client.connect_ml_backend(pid, backend.url)
        try:
            ls_client.retrieve_predictions(pid, task_ids)
        finally:
            ls_client.sdk.ml.delete(ml_id)

    assert ls_client.predictions(task=broken) == []
    for task in task_ids[:2]:
        (pred,) = ls_client.predictions(task=task)
        assert pred["model_version"] == version
        items = {item["from_name"]: item for item in pred["result"]}
        assert items["tags"]["type"] == "choices" and items["tags"]["value"] == {"choices": ["giraffe"]}
        assert items["taxo"]["type"] == "taxonomy"
        assert items["taxo"]["value"] == {"taxonomy": [["Animal", "Giraffe"]]}
        assert items["taxo"]["assistant"]["scores"]["Animal / Giraffe"] == pytest.approx(0.9)
        assert 0.0 <= pred["score"] <= 1.0


def test_a_stale_prediction_is_replaced_in_place(ls_server: LSServer, ls_client: LSClient, project: Project) -> None:
    """``LabelStudioClient.update_prediction`` (a refit's re-prediction): same id, new result, one prediction."""
    from backends.convert import recalibration_of
    from studio.client import LabelStudioClient
    from studio.protocol import Prediction

    client = LabelStudioClient(ls_server.url, ls_server.api_key)
    task = project.local[0]
    old = Prediction.model_validate(
        {"model_version": "mkt-r0+fp", "score": 0.4, "result": _result(["giraffe"], assistant=TAGS)}
    )
    pid = client.create_prediction(task, old)
    assert pid is not None
    new = Prediction.model_validate(
        {"model_version": "mkt-r0+fp", "score": 0.7,
         "result": _result(["giraffe", "outdoor"], assistant={**TAGS, "recalibration": "r3"})}
    )  # fmt: skip

    client.update_prediction(pid, new)

    (stored,) = [p for p in client.task_predictions(task) if p["model_version"] == "mkt-r0+fp"]
    assert stored["id"] == pid and stored["score"] == pytest.approx(0.7)
    assert stored["result"][0]["value"] == {"choices": ["giraffe", "outdoor"]}
    assert recalibration_of(stored["result"]) == "r3"
    assert [recalibration_of(p["result"]) for p in client.predictions(project.id) if p["id"] == pid] == ["r3"]
