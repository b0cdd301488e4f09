"""Oracle selectors (simulation-only upper bounds) and the label-review ceiling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from assistant.errors import ConfigError
from assistant.inference import Tagger
from benchworld.simulation import SimulationConfig, render_labeled
from benchworld.simulation.active import ActiveLearningConfig, simulate_active_learning
from benchworld.simulation.annotator import LabeledImages
from benchworld.simulation.features import encode_images
from benchworld.simulation.label_quality_ceiling import label_quality_ceiling
from benchworld.simulation.loop import SimulationState
from benchworld.simulation.oracles import ORACLES, is_oracle, oracle_selector
from benchworld.world.config import Stream, world_config
from tests.benchworld.test_selection_simulation import INITIAL, _config


def _state(pool: LabeledImages, service: object, annotated: set[int]) -> SimulationState:
    return SimulationState(pool, [], annotated, list(INITIAL), service, 1, np.random.default_rng(0))  # type: ignore[arg-type]


def test_oracles_are_not_registered_strategies() -> None:
    from assistant.selection import list_strategies

    assert set(ORACLES) == {"oracle-loss", "oracle-dense"}
    assert all(is_oracle(n) and n not in list_strategies() for n in ORACLES)
    assert not is_oracle("hybrid")


def test_the_dense_oracle_takes_the_unannotated_images_with_most_true_tags() -> None:
    pool = render_labeled(Stream.TRAIN, 40)
    counts = pool.targets(list(INITIAL)).clip(0).sum(axis=1)
    picked = oracle_selector("oracle-dense", pool)(_state(pool, None, {0, 1}), 5)
    assert len(picked) == 5 and not {0, 1} & set(picked)
    rest = [i for i in range(40) if i not in {0, 1, *picked}]
    assert min(counts[picked]) >= max(counts[rest])


def test_the_loss_oracle_takes_the_images_the_model_gets_wrong(tiny_loaded) -> None:
    rendered = render_labeled(Stream.TRAIN, 30)
    tagger = Tagger(tiny_loaded, device=tiny_loaded.model.device)
    probs = tagger.probabilities(encode_images(tiny_loaded, rendered.images, 16), list(INITIAL))
    # The truth over the options agrees with the model's decisions on even images and is the
    # opposite on odd ones: the odd images are the ones it gets most wrong.
    agree = probs >= 0.5
    truth_opts = np.where((np.arange(30) % 2 == 0)[:, None], agree, ~agree)
    truth = rendered.truth.copy()
    truth[:, [rendered.names.index(n) for n in INITIAL]] = truth_opts
    pool = dataclasses.replace(rendered, truth=truth)
    picked = oracle_selector("oracle-loss", pool, batch=16)(_state(pool, tiny_loaded, set()), 10)
    assert sorted(i % 2 for i in picked) == [1] * 10


def test_an_oracle_runs_in_the_active_learning_simulation(tiny_loaded) -> None:
    result = simulate_active_learning(tiny_loaded, _config(strategies=("random", "oracle-dense")))
    assert [r.strategy for r in result.runs] == ["random", "oracle-dense"]
    assert set(result.summary()) == {"random", "oracle-dense"}
    with pytest.raises(ConfigError, match="oracle-loss"):
        simulate_active_learning(tiny_loaded, _config(strategies=("oracle-best",)))


def test_a_better_synthetic_scorer_lets_the_review_find_more() -> None:
    sim = SimulationConfig(initial_labels=INITIAL, novel_labels=("snow",))
    cfg = ActiveLearningConfig(
        strategies=("random",), seeds=(0,), budget=200, rounds=2, pool_images=200, simulation=sim
    )
    reports: list[tuple[str, int, int]] = []
    weak, strong = label_quality_ceiling(
        cfg, fraction=0.1, flag_fraction=0.1, separations=(0.2, 6.0), progress=lambda *a: reports.append(a)
    )
    assert weak.corrupted == strong.corrupted > 0 and weak.flagged == strong.flagged == 20
    assert weak.map < 40.0 < 95.0 < strong.map
    # Near-perfect scores put almost every corrupted task first; near-random ones do not.
    assert strong.recall >= 0.8 > 0.5 >= weak.recall
    assert reports[-1] == ("reviews", 2, 2)
    with pytest.raises(ConfigError):
        label_quality_ceiling(cfg, separations=(0.0,))


def test_the_ceiling_reviews_the_same_corrupted_tasks_as_the_label_quality_check(tiny_loaded) -> None:
    from benchworld.simulation.active import simulate_label_quality

    # World v1's uniform corruption is the same with or without shown predictions; v2's team
    # also keeps shown wrong tags, which the ceiling (no predictions) cannot replay.
    cfg = _config(budget=60, pool_images=60, seeds=(4,))
    cfg = dataclasses.replace(cfg, simulation=dataclasses.replace(cfg.simulation, world=world_config("world-v1")))
    (real,) = simulate_label_quality(tiny_loaded, cfg, fraction=0.2, flag_fraction=0.2)
    (point,) = label_quality_ceiling(cfg, fraction=0.2, flag_fraction=0.2, separations=(1.0,))
    assert point.corrupted == real.corrupted > 0 and point.flagged == real.flagged
