"""The backend chooses shown tags by expected edits: break-even, cost overrides, refit, guard, caution."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.convert import SCORES_KEY, build_predict_requests, predictions_from_results
from backends.serving import ServingPolicy, load_policy
from preannotation import EditCosts, LogitMap, Recalibration, expected_cost
from state.ledger import open_ledger
from state.settings import Settings
from studio.config import parse_label_config
from studio.errors import LabelConfigError
from studio.protocol import Task
from tests.backends.test_convert import fake_worker

TAGS = ("cat", "dog", "sofa", "tree", "zebra", "car")


def xml(attrs: str = "", choices: str = "") -> str:
    body = choices or "".join(f'<Choice value="{t}"/>' for t in TAGS)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<Choices name="tags" toName="image" choice="multiple" {attrs}>{body}</Choices></View>'
    )


def predict(
    config: str, scores: dict[str, float], policy: ServingPolicy | None = None, *, calibration: str = "platt"
) -> dict[str, Any] | None:
    """The one result item of one task (None when nothing is shown)."""
    vocab = parse_label_config(config)
    tasks = [Task(id=1, data={"image": "/data/upload/1/a.jpg"}, project=1)]
    (request,), _ = build_predict_requests(vocab, tasks, project=1)
    result = fake_worker(request, scores).model_copy(update={"calibration": calibration})
    (prediction,) = predictions_from_results(vocab, tasks, [result], policy=policy).predictions
    assert prediction is not None
    if not prediction.result:
        return None
    item: dict[str, Any] = prediction.result[0].model_dump(mode="json", exclude_none=True)
    return item


def shown(item: dict[str, Any] | None) -> list[str]:
    return [] if item is None else list(item["value"]["choices"])


def test_break_even_is_inclusive_at_equal_costs() -> None:
    item = predict(xml(), {"cat": 0.5, "dog": 0.4999, "sofa": 0.93})
    assert shown(item) == ["sofa", "cat"]
    assert item is not None and item[SCORES_KEY]["thresholds"]["cat"] == pytest.approx(0.5)


def test_project_costs_move_the_break_even_and_a_control_knob_overrides_them() -> None:
    scores = {"cat": 0.4, "dog": 0.3, "sofa": 0.2}
    cheap_adds_dear_removes = ServingPolicy(costs=EditCosts(add=1, remove=3))  # break-even 0.75
    assert shown(predict(xml(), scores, cheap_adds_dear_removes)) == []
    dear_adds = ServingPolicy(costs=EditCosts(add=2, remove=1))  # break-even 1/3
    assert shown(predict(xml(), scores, dear_adds)) == ["cat"]
    # The control's own knobs win over the project's costs: add=3 remove=1 is break-even 0.25.
    knobs = xml('model_cost_add="3" model_cost_remove="1"')
    item = predict(knobs, scores, cheap_adds_dear_removes)
    assert shown(item) == ["cat", "dog"]
    assert item is not None and item[SCORES_KEY]["thresholds"]["sofa"] == pytest.approx(0.25)


def test_an_explicit_model_threshold_still_wins_over_the_costs() -> None:
    config = xml('model_threshold="0.35" model_cost_add="1" model_cost_remove="9"')
    assert shown(predict(config, {"cat": 0.4, "dog": 0.3})) == ["cat"]
    per_choice = xml(choices='<Choice value="cat" model_threshold="0.9"/><Choice value="dog"/>')
    assert shown(predict(per_choice, {"cat": 0.8, "dog": 0.6})) == ["dog"]


@pytest.mark.parametrize("value", ["0", "-1", "x", "inf"])
def test_bad_cost_knobs_say_what_to_write(value: str) -> None:
    with pytest.raises(LabelConfigError, match="model_cost_add") as info:
        parse_label_config(xml(f'model_cost_add="{value}"'))
    assert "positive number" in str(info.value)


def test_settings_give_each_project_its_costs() -> None:
    settings_ = Settings(edit_cost_add=1.0, edit_cost_remove=2.0, project_edit_costs={7: {"add": 3}})
    assert settings_.edit_costs(1) == EditCosts(1.0, 2.0)
    assert settings_.edit_costs(7) == EditCosts(3.0, 2.0)  # the missing cost comes from the defaults
    with pytest.raises(ValueError, match="ASSISTANT_PROJECT_EDIT_COSTS for project 7"):
        Settings(project_edit_costs={7: {"remove": 0}})


def test_a_refit_is_applied_before_the_rule_and_the_models_own_scores_are_kept() -> None:
    # The project's annotators find cat much rarer than the model thinks: its map pulls 0.7 to 0.27.
    recal = Recalibration(LogitMap(), {"cat": LogitMap(1.0, -1.85, 40)}, "mkt", 40)
    policy = ServingPolicy(recalibration=recal, recalibration_id="r12")
    item = predict(xml(), {"cat": 0.7, "dog": 0.7}, policy)
    assert shown(item) == ["dog"]
    assert item is not None
    extras = item[SCORES_KEY]
    assert extras["recalibration"] == "r12" and extras["calibration"] == "platt"
    assert extras["model_scores"]["cat"] == pytest.approx(0.7)
    assert extras["scores"]["cat"] == pytest.approx(1 / (1 + np.exp(-(np.log(0.7 / 0.3) - 1.85))), abs=1e-4)
    assert extras["scores"]["dog"] == pytest.approx(0.7)  # the pooled map is the identity
    # Without a refit nothing of it is recorded.
    plain = predict(xml(), {"cat": 0.7})
    assert plain is not None and "model_scores" not in plain[SCORES_KEY] and "recalibration" not in plain[SCORES_KEY]


def test_a_tag_the_guard_tripped_is_never_shown_but_still_scored() -> None:
    item = predict(xml(), {"cat": 0.99, "dog": 0.8}, ServingPolicy(suppressed=frozenset({"cat"})))
    assert shown(item) == ["dog"]
    assert item is not None and item[SCORES_KEY]["suppressed"] == ["cat"]
    assert item[SCORES_KEY]["scores"]["cat"] == pytest.approx(0.99)  # its answers still calibrate


def test_an_unmeasured_calibration_serves_few_confident_tags_until_a_refit() -> None:
    scores = {"cat": 0.95, "dog": 0.9, "sofa": 0.85, "tree": 0.82, "zebra": 0.7}
    cautious = ServingPolicy(conservative_threshold=0.8, conservative_max_tags=3)
    assert shown(predict(xml(), scores, cautious, calibration="default")) == ["cat", "dog", "sofa"]
    assert shown(predict(xml(), scores, cautious, calibration="prior")) == ["cat", "dog", "sofa", "tree", "zebra"]
    refit = ServingPolicy(recalibration=Recalibration(answers=0), conservative_threshold=0.8, conservative_max_tags=3)
    assert len(shown(predict(xml(), scores, refit, calibration="default"))) == 5  # a refit exists: no caution
    explicit = xml('model_threshold="0.6"')
    assert "zebra" in shown(predict(explicit, {"zebra": 0.7}, cautious, calibration="default"))


@settings(max_examples=60, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=len(TAGS), max_size=len(TAGS)),
    add=st.floats(0.2, 5.0),
    remove=st.floats(0.2, 5.0),
)
def test_the_served_set_minimises_expected_edits_among_all_subsets(p: list[float], add: float, remove: float) -> None:
    costs = EditCosts(add, remove)
    probs = np.round(np.array(p), 6)  # the workers round to 6 decimals
    item = predict(xml(), dict(zip(TAGS, probs.tolist(), strict=True)), ServingPolicy(costs=costs))
    chosen = np.array([t in shown(item) for t in TAGS])
    served = expected_cost(probs, chosen, costs)
    best = min(expected_cost(probs, np.array(mask), costs) for mask in itertools.product([False, True], repeat=6))
    assert served <= best + 1e-9


def test_the_policy_comes_from_the_store_and_survives_its_outage(tmp_path: Any) -> None:
    ledger = open_ledger(None, home=tmp_path)
    store = ledger.effort
    recal = Recalibration(LogitMap(0.9, -0.4, 30), {}, "mkt-a", 30)
    refit = store.save_refit(5, "mkt-a", recalibration=recal, annotations=20, through_seq=20)
    from state.effort_records import GuardState

    store.set_guard(5, GuardState("dog", "tripped", "mkt-a", reason="tripped"), "tripped", 1, 19)
    settings_ = Settings(home=tmp_path, project_edit_costs={5: {"add": 2, "remove": 1}})
    policy, error = load_policy(store, settings_, 5, "mkt-a")
    assert error is None and policy.recalibration == recal and policy.recalibration_id == refit.id
    assert policy.suppressed == {"dog"} and policy.costs == EditCosts(2, 1)
    other, _ = load_policy(store, settings_, 5, "mkt-b")  # another checkpoint: neither refit nor guard
    assert other.recalibration is None and other.suppressed == frozenset()
    ledger.close()
    degraded, error = load_policy(store, settings_, 5, "mkt-a")  # the database is gone
    assert error is not None and degraded.recalibration is None and degraded.costs == EditCosts(2, 1)
