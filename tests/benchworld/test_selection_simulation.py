"""The active-learning simulation on a tiny model: the strategy hook, resuming, the summary, label quality."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Stage1Config, Stage2Config
from assistant.errors import ConfigError
from assistant.rounds import RoundConfig
from benchworld.simulation import SimulationConfig, render_labeled
from benchworld.simulation.active import (
    ActiveLearningConfig,
    ActiveLearningResult,
    CorruptingAnnotator,
    StrategyRun,
    plot_active_learning,
    simulate_active_learning,
    simulate_label_quality,
)
from benchworld.world.config import Stream

INITIAL = ("red", "green", "blue", "yellow", "grass", "water", "sky", "brick")
FAST = RoundConfig(
    stage1=Stage1Config(epochs=1, batch_size=16, warmup_epochs=0.0, augment=False, distill_weight=0.1),
    stage2=Stage2Config(epochs=1, batch_size=16),
    min_label_positives=2,
    min_label_negatives=2,
    min_train_images=4,
    min_heldout_images=3,
    eval_batch_size=32,
)


def _config(**overrides: object) -> ActiveLearningConfig:
    sim = SimulationConfig(initial_labels=INITIAL, novel_labels=("snow",), round=FAST, heldout_fraction=0.3)
    base = ActiveLearningConfig(
        strategies=("random", "hybrid"),
        seeds=(0,),
        budget=40,
        rounds=2,
        pool_images=60,
        eval_images=24,
        eval_stream=Stream.VAL,
        simulation=sim,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_each_strategy_runs_the_round_loop_and_runs_resume(tiny_loaded, tmp_path: Path) -> None:
    cfg = _config()
    saved: list[StrategyRun] = []
    result = simulate_active_learning(tiny_loaded, cfg, on_run=saved.append)
    assert [(r.strategy, r.seed) for r in result.runs] == [("random", 0), ("hybrid", 0)]
    for run in result.runs:
        assert run.labels == [0, 20, 40] and len(run.map) == 3 and len(run.promoted) == 2
        assert all(0.0 <= v <= 100.0 for v in run.map)
    # Row 0 is the same base model for every strategy.
    assert result.runs[0].map[0] == pytest.approx(result.runs[1].map[0])
    # Nothing is run again when every run is already done.
    again = simulate_active_learning(None, cfg, completed=saved)  # type: ignore[arg-type]
    assert again.runs == result.runs
    summary = result.summary()
    assert summary["random"]["labels_to_random_final"] <= 40  # random reaches its own final mAP
    assert set(summary) == {"random", "hybrid"}
    assert "reaches random's final mAP" in result.table()
    assert result.to_json()["settings"]["fingerprint"] == cfg.fingerprint()
    assert plot_active_learning(result, tmp_path / "al.png").stat().st_size > 0


def test_the_summary_interpolates_and_measures_noise() -> None:
    cfg = _config(seeds=(0, 1))

    def run(name: str, seed: int, values: list[float]) -> StrategyRun:
        return StrategyRun(name, seed, [0, 20, 40], values, values, [float("nan")] * 3, [True, True], 1.0)

    result = ActiveLearningResult(
        cfg,
        [
            run("random", 0, [10.0, 20.0, 30.0]),
            run("random", 1, [10.0, 22.0, 32.0]),
            run("hybrid", 0, [10.0, 30.0, 32.0]),
            run("hybrid", 1, [10.0, 30.0, 30.0]),
        ],
    )
    summary = result.summary()
    # Random ends at 31; hybrid passes 31 between 20 (30) and 40 (31): at 20 + 20 * 1 / 1 = 40.
    assert summary["hybrid"]["labels_to_random_final"] == pytest.approx(40.0)
    x, mean, std = result.curves()["random"]
    np.testing.assert_allclose(mean, [10, 21, 31])
    assert std[1] == pytest.approx(np.std([20, 22], ddof=1))
    assert summary["hybrid"]["worse_than_noise"] == []
    worse = ActiveLearningResult(
        cfg, [*result.runs[:2], run("hybrid", 0, [10, 15, 31]), run("hybrid", 1, [10, 15, 31])]
    )
    assert worse.summary()["hybrid"]["worse_than_noise"] == [20]


def test_invalid_settings_are_refused(tiny_loaded) -> None:
    with pytest.raises(ConfigError, match="margin"):
        simulate_active_learning(tiny_loaded, _config(strategies=("margin",)))
    with pytest.raises(ConfigError):
        simulate_active_learning(tiny_loaded, _config(pool_images=10))


def test_the_corrupting_annotator_gets_one_tag_wrong_on_a_fraction_of_tasks() -> None:
    pool = render_labeled(Stream.TRAIN, 400)
    annotator = CorruptingAnnotator(pool, fraction=0.1, seed=3)
    options = list(INITIAL)
    notes = [annotator.annotate(i, options, []) for i in range(400)]
    assert 20 <= len(annotator.corrupted) <= 60
    kinds = {kind for kind, _ in annotator.corrupted.values()}
    assert kinds == {"missing", "wrong"}
    for note in notes:
        truth = {n for n in options if pool.truth[int(note.key), pool.names.index(n)]}
        diff = truth ^ set(note.positives)
        if note.key in annotator.corrupted:
            kind, tag = annotator.corrupted[note.key]
            assert diff == {tag} and (tag in truth) == (kind == "missing")
        else:
            assert not diff


def test_the_label_quality_simulation_counts_what_the_review_flags(tiny_loaded) -> None:
    reports: list[tuple[str, int, int]] = []
    (result,) = simulate_label_quality(
        tiny_loaded,
        _config(budget=60, pool_images=60),
        fraction=0.2,
        flag_fraction=0.2,
        progress=lambda what, done, total: reports.append((what, done, total)),
    )
    assert [r for r in reports if r[0] == "runs"] == [("runs", 0, 1), ("runs", 1, 1)]
    assert result.tasks == 60 and 0 < result.corrupted < 30
    assert result.flagged == 12 and 0 <= result.found <= result.corrupted
    assert sum(c for _, c in result.found_by_kind.values()) == result.corrupted
    assert result.random_recall == pytest.approx(0.2)


def test_each_annotation_is_scored_by_the_model_in_service_when_it_was_annotated() -> None:
    from types import SimpleNamespace

    from benchworld.simulation.active import _Rounds

    base, r1, r3 = object(), object(), object()
    rounds = _Rounds([base])  # type: ignore[list-item]
    state = SimpleNamespace(annotations=[], service=base)
    for service, added in ((r1, 10), (r1, 10), (r3, 0), (r3, 5)):  # round 3 annotated nothing
        state.annotations += [None] * added
        state.service = service  # promoted (or kept) at the end of the round
        rounds(state, None)  # type: ignore[arg-type]
    assert rounds.scorers("annotated") == [(base, 0, 10), (r1, 10, 20), (r3, 20, 25)]
    assert rounds.scorers("final") == [(r3, 0, 25)]
