"""Pre-annotation in the simulations: the rule, the project's refit, the guard, and effort against from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ConfigError
from benchworld.simulation.serving import EffortLog, ProjectServing, ServingConfig
from preannotation import REFIT_EVERY, EditCosts, GuardConfig, RecalibrationConfig
from state.settings import Settings

LABELS = ("cat", "dog", "car")


def test_the_rule_shows_from_the_break_even_point_with_the_cap() -> None:
    serving = ProjectServing(ServingConfig(refit_every=0, guard=None))
    served = serving.serve("v1", LABELS, np.array([0.49, 0.5, 0.9]))
    assert served.tags == ("dog", "car") and served.calibration is None
    cheap_adds = ProjectServing(ServingConfig(costs=EditCosts(add=3, remove=1), max_tags=1, refit_every=0))
    assert cheap_adds.serve("v1", LABELS, np.array([0.3, 0.2, 0.1])).tags == ("cat",)  # break-even 0.25, cap 1


def test_a_shift_in_the_probabilities_is_corrected_after_n_annotations() -> None:
    # The model says 0.7 for "dog", but dogs are in 20% of this project's images: shown and removed.
    rng = np.random.default_rng(0)
    cfg = ServingConfig(refit_every=30, guard=None, recalibration=RecalibrationConfig(prior_answers=10))
    serving = ProjectServing(cfg)
    probabilities = np.array([0.1, 0.7, 0.9])
    shown_dog = []
    for _ in range(60):
        served = serving.serve("v1", LABELS, probabilities)
        shown_dog.append("dog" in served.tags)
        final = {"car"} | ({"dog"} if rng.random() < 0.2 else set())
        serving.record(served, final)
    assert all(shown_dog[:30]), "before the first refit the model's own probabilities decide"
    assert not any(shown_dog[31:]), "after it, the refit map puts 'dog' below the break-even point"
    assert serving.refits == 2 and serving.calibration == "v1/refit-2"
    assert serving.serve("v1", LABELS, probabilities).probabilities[1] < 0.4
    # 'car' is always right: it stays shown.
    assert "car" in serving.serve("v1", LABELS, probabilities).tags


def test_the_guard_trips_a_tag_removed_more_often_than_kept_and_a_new_version_resumes_it() -> None:
    serving = ProjectServing(ServingConfig(refit_every=0, guard=GuardConfig(min_shown=20)))
    probabilities = np.array([0.8, 0.6, 0.2])
    for i in range(25):
        served = serving.serve("v1", LABELS, probabilities)
        serving.record(served, {"cat"} | ({"dog"} if i % 5 == 0 else set()))  # 'dog' kept 1 time in 5
    assert "dog" in serving.suppressed and "cat" not in serving.suppressed
    tripped = [e for e in serving.events if e.tripped]
    assert [e.tag for e in tripped] == ["dog"] and "below the break-even" in tripped[0].reason
    assert tripped[0].annotations == 20  # judged at once when the 20th showing was answered
    assert serving.serve("v1", LABELS, probabilities).tags == ("cat",)
    # A promoted model starts again: every tag resumes and its counts restart.
    assert serving.serve("v2", LABELS, probabilities).tags == ("cat", "dog")
    resumed = serving.events[-1]
    assert not resumed.tripped and resumed.tag == "dog" and "newer model version" in resumed.reason


def test_a_refit_that_predicts_the_tripped_tag_better_resumes_it() -> None:
    cfg = ServingConfig(refit_every=40, guard=GuardConfig(min_shown=20), recalibration=RecalibrationConfig())
    serving = ProjectServing(cfg)
    probabilities = np.array([0.8, 0.6, 0.2])
    for i in range(40):
        serving.record(serving.serve("v1", LABELS, probabilities), {"cat"} | ({"dog"} if i % 5 == 0 else set()))
    assert serving.refits == 1 and "dog" not in serving.suppressed
    events = [(e.tag, e.tripped) for e in serving.events]
    assert events == [("dog", True), ("dog", False)]
    assert "predicts its 20 showings better" in serving.events[-1].reason
    # The refit map, not the guard, now keeps 'dog' hidden: its probability is below 0.5.
    assert "dog" not in serving.serve("v1", LABELS, probabilities).tags


def test_answers_to_another_versions_probabilities_do_not_calibrate_the_one_in_service() -> None:
    serving = ProjectServing(ServingConfig(refit_every=1, guard=None))
    old = serving.serve("v1", LABELS, np.array([0.9, 0.9, 0.9]))
    serving.serve("v2", LABELS, np.array([0.5, 0.5, 0.5]))
    assert not serving.record(old, set()) and serving.refits == 0 and serving.annotations == 1
    assert serving.record(serving.serve("v2", LABELS, np.array([0.5, 0.5, 0.5])), {"cat"})


def test_effort_is_counted_against_the_truth_and_errors_apart() -> None:
    log = EffortLog()
    log.add(shown=["cat", "dog"], truth={"cat", "car"}, errors=1)  # kept the wrong 'dog': an error, still an edit due
    log.add(shown=[], truth={"cat"})
    log.add(shown=["cat"], truth={"cat"})
    log.add(shown=["car"], truth={"cat", "car"})
    total = log.totals()
    assert (total.kept, total.removed, total.added, total.scratch) == (3, 1, 3, 6)
    assert log.cumulative_ratio(1) == pytest.approx(1.0)
    assert log.last_quarter().ratio == pytest.approx(0.5)
    summary = log.summary()
    assert summary["errors_introduced"] == 1 and summary["cost_ratio"] == pytest.approx(4 / 6, abs=1e-4)
    assert summary["shown_per_task"] == pytest.approx(1.0)


def test_unusable_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="refit_every"):
        ServingConfig(refit_every=-1)
    assert ServingConfig().as_dict()["break_even"] == pytest.approx(0.5)


def test_live_and_simulated_projects_refit_on_one_default(tmp_path: Path) -> None:
    live = Settings(home=tmp_path, base_model="ViT-B-32:random-for-tests", _env_file=None)
    assert live.recalibration_every == ServingConfig().refit_every == REFIT_EVERY
