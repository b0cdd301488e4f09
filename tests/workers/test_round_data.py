"""Round data from Label Studio exports: the target rule (the backend's corrections), the label history, images."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from assistant.corrections import correction_targets
from assistant.labels import LabelSet
from studio.config import parse_label_config
from studio.protocol import Annotation, Prediction
from studio.results import annotation_to_correction
from tests.conftest import REPO_ROOT
from workers.feature_cache import FeatureCache
from workers.media import MediaFetcher
from workers.round_data import LabelHistory, exported_tasks, fetch_images, shown_labels

CONFIGS = REPO_ROOT / "tests" / "fixtures" / "label_configs"
CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple">
    <Choice value="cat"/><Choice value="dog"/><Choice value="pet" predicted_values="cat,dog,hamster"/>
    <Choice value="snow"/>
  </Choices></View>"""


def _item(*choices: str, control: str = "tags") -> dict:
    return {"from_name": control, "to_name": "image", "type": "choices", "value": {"choices": list(choices)}}


def _task(task_id: int, annotations: list[dict], image: str = "/img.png") -> dict:
    return {"id": task_id, "data": {"image": image}, "annotations": annotations}


@pytest.mark.parametrize("name", ["multi_control.xml", "taxonomy.xml"])
def test_positives_and_hard_negatives_agree_with_the_backends_corrections(name: str) -> None:
    config = (CONFIGS / name).read_text()
    theirs = parse_label_config(config)
    control = theirs.active[-1]
    keys = [t.key for t in control.targets]
    value = {"taxonomy": [k.split(" / ") for k in keys[-1:]]} if control.tag == "Taxonomy" else {"choices": keys[-1:]}
    predicted = {"taxonomy": [k.split(" / ") for k in keys[:1]]} if control.tag == "Taxonomy" else {"choices": keys[:1]}
    result = [{"from_name": control.name, "to_name": control.to_name, "type": control.result_type, "value": value}]
    pred = [{"from_name": control.name, "to_name": control.to_name, "type": control.result_type, "value": predicted}]
    expected = annotation_to_correction(
        theirs,
        Annotation.model_validate({"id": 1, "task": 7, "result": result, "parent_prediction": 9}),
        Prediction.model_validate({"id": 9, "result": pred}),
    )
    task = {
        "id": 7,
        "data": {control.value_key: "/img.png"},
        "annotations": [{"id": 1, "result": result, "parent_prediction": 9}],
    }
    (exported,), _ = exported_tasks([task], {9: {"id": 9, "result": pred}}, theirs, {})
    assert set(exported.annotation.positives) == set(expected.positive_labels)
    assert set(exported.annotation.hard_negatives) == set(expected.negative_labels)


def test_the_latest_annotation_counts_and_options_added_later_are_unknown() -> None:
    vocab = parse_label_config(CONFIG)
    history = {"cat": "", "dog": "", "hamster": "", "snow": "2026-03-01T00:00:00+00:00"}
    tasks = [
        _task(
            1,
            [
                {"id": 10, "result": [_item("dog")], "updated_at": "2026-01-01T00:00:00Z", "parent_prediction": 50},
                {"id": 11, "result": [_item("cat")], "updated_at": "2026-02-01T00:00:00Z", "parent_prediction": 50},
                {"id": 12, "result": [_item("snow")], "updated_at": "2026-04-01T00:00:00Z", "was_cancelled": True},
            ],
        ),
        _task(2, [{"id": 20, "result": [_item("pet", "snow")], "updated_at": "2026-03-02T00:00:00Z"}]),
        _task(3, [{"id": 30, "result": [], "was_cancelled": True}]),
        _task(4, []),
        {"id": 5, "data": {}, "annotations": [{"id": 50, "result": [_item("cat")]}]},
    ]
    predictions = {50: {"id": 50, "result": [_item("cat", "pet")]}}
    exported, skipped = exported_tasks(tasks, predictions, vocab, history)
    assert skipped == {"unannotated_or_cancelled": 2, "no_image": 1}
    first, second = (t.annotation for t in exported)
    # Task 1: the February revision wins (the later one was cancelled); "pet" was predicted and
    # removed: every model label behind it is a hard negative, except the kept "cat".
    assert first.annotation_id == 11 and first.positives == {"cat"}
    assert first.hard_negatives == {"dog", "hamster"}
    assert first.shown == {"cat", "dog", "hamster"}  # snow was added in March
    # Task 2: "pet" names one of three labels: no positive from it.
    assert second.positives == {"snow"} and second.shown == {"cat", "dog", "hamster", "snow"}
    targets = correction_targets(LabelSet(vocab.labels), [first, second])
    assert vocab.labels == ("cat", "dog", "hamster", "snow")
    assert targets.tolist() == [[1, -1, -1, 0], [-1, -1, -1, 1]]


def test_the_label_history_starts_with_everything_and_stamps_later_labels(tmp_path: Path) -> None:
    history = LabelHistory(tmp_path / "labels.json")
    assert history.update(["cat", "dog"]) == {"cat": "", "dog": ""}
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    later = history.update(["cat", "dog", "zebra"], now=now)
    assert later["zebra"] == "2026-05-01T00:00:00+00:00" and LabelHistory(tmp_path / "labels.json").load() == later
    before = dt.datetime(2026, 4, 30, tzinfo=dt.UTC)
    assert shown_labels(later, ["cat", "zebra"], before) == {"cat"}
    assert shown_labels(later, ["cat", "zebra"], now) == {"cat", "zebra"}
    assert shown_labels(later, ["cat", "zebra"], None) == {"cat"}  # unknown time: only the always-present


def test_images_are_stored_by_content_once_and_failures_are_reported(settings, image_dir: Path, tmp_path: Path):
    vocab = parse_label_config(CONFIG)
    paths = sorted(image_dir.glob("*.png"))
    tasks = [_task(i + 1, [{"id": i, "result": [_item("cat")]}], str(p)) for i, p in enumerate(paths[:3])]
    tasks.append(_task(9, [{"id": 9, "result": [_item("dog")]}], str(image_dir / "missing.png")))
    exported, _ = exported_tasks(tasks, {}, vocab, {})
    fetcher = MediaFetcher(settings)
    cache = FeatureCache(settings.feature_cache_dir, settings.feature_cache_max_bytes)
    try:
        stored, report = fetch_images(exported, fetcher, tmp_path / "store", cache=cache)
        assert [s.task_id for s in stored] == [1, 2, 3] and report.downloaded == 3 and list(report.failed) == [9]
        assert all(s.path.read_bytes() == p.read_bytes() for s, p in zip(stored, paths, strict=False))
        again, report2 = fetch_images(exported[:3], fetcher, tmp_path / "store", cache=cache)
        assert report2.reused == 3 and [s.content_hash for s in again] == [s.content_hash for s in stored]
    finally:
        fetcher.close()
        cache.close()
