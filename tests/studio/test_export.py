"""Reading a Label Studio export: the latest annotation per task, tolerant of odd items, as corrections."""

from __future__ import annotations

import datetime as dt

from studio.config import parse_label_config
from studio.export import latest_annotation, parse_time, prediction_index, read_export, result_items

CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="tags" toName="image" choice="multiple">
    <Choice value="dog "/><Choice value=" cat"/><Choice value="pet" predicted_values="dog,hamster"/>
  </Choices>
  <Taxonomy name="kind" toName="image"><Choice value=" Animal "><Choice value="Bird "/></Choice></Taxonomy>
  <TextArea name="note" toName="image"/>
</View>"""


def _item(control: str, value: dict[str, object], kind: str = "choices") -> dict[str, object]:
    return {"from_name": control, "to_name": "image", "type": kind, "value": value}


def test_values_as_label_studio_stores_them_map_to_the_stripped_labels() -> None:
    vocab = parse_label_config(CONFIG)
    result = [
        _item("tags", {"choices": ["dog ", " cat"]}),
        _item("kind", {"taxonomy": [[" Animal ", "Bird "]]}, "taxonomy"),
        _item("note", {"text": ["a dog "]}, "textarea"),
        {"id": "r1", "from_id": "a", "to_id": "b", "type": "relation"},  # no control: skipped
        "not an item",
    ]
    tasks = [{"id": 3, "data": {"image": "/a.png"}, "annotations": [{"id": 8, "result": result}]}]
    (found,), unannotated = read_export(tasks, {}, vocab)
    assert unannotated == 0 and found.task_id == 3 and found.annotation_id == 8
    # Choosing Animal / Bird implies Animal; the labels are the stripped ones the model scores.
    assert set(found.correction.positive_labels) == {"dog", "cat", "Animal", "Bird"}
    assert found.correction.ignored_controls == ("note",)


def test_the_latest_usable_annotation_counts_and_removed_predictions_are_negatives() -> None:
    vocab = parse_label_config(CONFIG)
    annotations = [
        {"id": 1, "result": [_item("tags", {"choices": [" cat"]})], "updated_at": "2026-01-02T00:00:00Z"},
        {
            "id": 2,
            "result": [_item("tags", {"choices": ["dog "]})],
            "updated_at": "2026-01-03T00:00:00Z",
            "parent_prediction": 40,
        },
        {"id": 3, "result": [], "updated_at": "2026-01-04T00:00:00Z", "was_cancelled": True},
    ]
    predictions = prediction_index(
        [{"id": 40, "task": 3, "result": [_item("tags", {"choices": ["dog ", "pet"]})]}, {"task": 3}]
    )
    tasks = [
        {"id": 3, "data": {"image": "/a.png"}, "annotations": annotations},
        {"id": 4, "data": {"image": "/b.png"}, "annotations": [annotations[2]]},
        {"id": 5, "data": {"image": "/c.png"}},
    ]
    (found,), unannotated = read_export(tasks, predictions, vocab)
    assert unannotated == 2 and found.annotation_id == 2
    assert found.annotated_at == dt.datetime(2026, 1, 3, tzinfo=dt.UTC)
    # "pet" (dog or hamster) was predicted and removed: both are hard negatives, but dog is present.
    assert found.correction.positive_labels == ("dog",)
    assert found.correction.negative_labels == ("hamster",)


def test_helpers_tolerate_what_exports_contain() -> None:
    assert latest_annotation([{"was_cancelled": True}, "x"]) is None
    assert latest_annotation([{"id": 1}, {"id": 2}]) == {"id": 2}  # no times: the higher id
    assert parse_time("2026-01-01T00:00:00") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_time("yesterday") is None and parse_time(None) is None
    assert result_items(None) == [] and result_items([{"from_name": "tags"}]) == []
    assert prediction_index([{"id": "7"}, {"id": 7, "result": []}]) == {7: {"id": 7, "result": []}}
