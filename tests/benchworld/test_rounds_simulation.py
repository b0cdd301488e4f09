"""The simulated annotator and the offline round loop, on a tiny model and a few world images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Stage1Config, Stage2Config
from assistant.errors import ConfigError
from assistant.rounds import RoundConfig
from benchworld.simulation import (
    SimulatedAnnotator,
    SimulationConfig,
    next_unlabeled,
    plot_simulation,
    plot_simulation_effort,
    render_labeled,
    simulate_rounds,
)
from benchworld.world.config import Stream

INITIAL = ("red", "green", "blue", "yellow", "grass", "water", "sky", "brick")


def test_rendered_images_have_complete_labels_and_match_the_benchmark_stream() -> None:
    from benchworld.world.dataset import generate_split

    labeled = render_labeled(Stream.TEST, 6)
    split = generate_split("test", 6)
    np.testing.assert_array_equal(labeled.images, split.images)
    np.testing.assert_array_equal(labeled.targets(split.label_names), split.targets)


def test_the_annotator_keeps_true_options_and_removes_wrong_predictions() -> None:
    pool = render_labeled(Stream.TRAIN, 4)
    truth = {n for n, t in zip(pool.names, pool.truth[2], strict=True) if t}
    options = [*sorted(truth)[:2], "zebra", "snow"]
    predicted = [sorted(truth)[0], "zebra"]
    note = SimulatedAnnotator(pool).annotate(2, options, predicted)
    assert note.positives == frozenset(n for n in options if n in truth)
    assert note.hard_negatives == frozenset(n for n in predicted if n not in truth)
    assert note.shown == frozenset(options) and note.key == "2"


def test_automation_bias_keeps_some_wrong_shown_tags_and_counts_them() -> None:
    pool = render_labeled(Stream.TRAIN, 40)
    wrong_shown = always = 0
    biased = SimulatedAnnotator(pool, automation_bias=0.5, seed=3)
    careful = SimulatedAnnotator(pool, seed=3)
    for i in range(40):
        truth = {n for n, t in zip(pool.names, pool.truth[i], strict=True) if t}
        wrong = sorted(set(pool.names) - truth)[:6]
        predicted = [*sorted(truth)[:1], *wrong]
        options = list(pool.names)
        note = biased.annotate(i, options, predicted)
        kept_wrong = note.positives - truth
        assert kept_wrong <= set(wrong)  # only wrong tags that were shown are ever kept
        assert note.hard_negatives == frozenset(set(wrong) - kept_wrong)
        wrong_shown += len(wrong)
        always += len(kept_wrong)
        assert careful.annotate(i, options, predicted).positives == frozenset(truth)
    assert biased.introduced_errors == always
    assert 0.35 * wrong_shown < always < 0.65 * wrong_shown  # 240 draws at b = 0.5
    assert careful.introduced_errors == 0
    with pytest.raises(ConfigError, match="automation_bias"):
        SimulatedAnnotator(pool, automation_bias=1.5)


def test_a_tiny_simulated_project_runs_rounds_adds_novel_labels_and_plots(tiny_loaded, tmp_path: Path) -> None:
    fast = RoundConfig(
        stage1=Stage1Config(epochs=1, batch_size=16, warmup_epochs=0.0, augment=False, distill_weight=0.1),
        stage2=Stage2Config(epochs=1, batch_size=16),
        min_label_positives=2,
        min_label_negatives=2,
        min_train_images=4,
        min_heldout_images=3,
        eval_batch_size=32,
    )
    cfg = SimulationConfig(
        rounds=2,
        images_per_round=24,
        initial_labels=INITIAL,
        novel_labels=("snow", "pink"),
        test_images=24,
        round=fast,
        heldout_fraction=0.3,
    )
    selected: list[int] = []

    def selector(state, n):
        picked = next_unlabeled(state, n)
        selected.append(len(picked))
        return picked

    result = simulate_rounds(tiny_loaded, cfg, selector=selector)
    assert [r.round for r in result.rows] == [0, 1, 2] and selected == [24, 24]
    assert [r.options for r in result.rows] == [8, 8, 10]  # the novel labels arrive in round 2
    assert result.rows[2].annotated == 48 and result.rows[2].heldout > 0
    assert not result.violations()
    for row in result.rows[1:]:
        if row.promoted:
            assert row.delta is not None and row.delta >= -cfg.round.tolerance
    assert set(result.rows[0].test_novel_ap) == {"snow", "pink"}
    assert set(result.test_prevalence) == {"snow", "pink"}
    assert "zero-shot when added (round 2)" in result.novel_summary()
    assert "round" in result.table() and result.to_json()["settings"]["novel_round"] == 2
    png = plot_simulation(result, tmp_path / "sim.png")
    assert png.stat().st_size > 0
    # Every annotation's edits against from scratch, per round and in all.
    assert len(result.effort.tasks) == 48
    assert sum(r.scratch for r in result.rows) == result.effort.totals().scratch > 0
    assert sum(r.edits for r in result.rows) == result.effort.totals().edits
    assert "from scratch" in result.effort_summary() and result.to_json()["effort"]["tasks"] == 48
    assert plot_simulation_effort(result, tmp_path / "effort.png").stat().st_size > 0


def test_invalid_simulation_settings_are_refused(tiny_loaded) -> None:
    cfg = SimulationConfig(rounds=1, initial_labels=("red", "unicorn"), novel_labels=())
    with pytest.raises(ConfigError, match="unicorn"):
        simulate_rounds(tiny_loaded, cfg)
    overlap = dataclasses.replace(cfg, initial_labels=("red", "snow"), novel_labels=("snow",))
    with pytest.raises(ConfigError, match="(?i)novel"):
        simulate_rounds(tiny_loaded, overlap)
