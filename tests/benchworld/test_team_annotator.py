"""World v2's annotation team: per-member miss, wrong-tag and automation-bias rates (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.errors import ConfigError
from benchworld.simulation.active import rarest_third
from benchworld.simulation.annotator import LabeledImages, SimulatedAnnotator, TeamAnnotator, annotator_for
from benchworld.world.config import WorldConfig, world_config
from benchworld.world.team import V2_TEAM, AnnotatorProfile

NAMES = tuple(f"t{i}" for i in range(10))


def _pool(n: int = 4000, seed: int = 0) -> LabeledImages:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, len(NAMES))) < np.linspace(0.6, 0.02, len(NAMES))
    return LabeledImages(np.zeros((n, 2, 2, 3), dtype=np.uint8), truth, NAMES, 1)


def test_each_member_makes_their_own_mistakes_at_their_rates() -> None:
    pool = _pool()
    team = (AnnotatorProfile(0.0, 0.0, 0.0), AnnotatorProfile(0.2, 0.3, 0.5))
    annotator = TeamAnnotator(pool, team, seed=1)
    shown_wrong = {0: 0, 1: 0}
    kept = {0: 0, 1: 0}
    missed = {0: 0, 1: 0}
    true_total = {0: 0, 1: 0}
    added = {0: 0, 1: 0}
    for i in range(len(pool)):
        truth = {n for n, t in zip(NAMES, pool.truth[i], strict=True) if t}
        wrong = sorted(set(NAMES) - truth)[:1]  # one wrong tag shown
        answer = annotator.annotate(i, NAMES, wrong)
        member = annotator.by_member[str(i)]
        assert member == i % 2  # tasks are dealt in turn
        true_total[member] += len(truth)
        missed[member] += len(truth - answer.positives)
        shown_wrong[member] += len(wrong)
        kept[member] += len(set(wrong) & answer.positives)
        added[member] += len(answer.positives - truth - set(wrong))
        assert (str(i) in annotator.corrupted) == (answer.positives != truth)
    assert missed[0] == kept[0] == added[0] == 0  # the careful member is perfect here
    assert missed[1] / true_total[1] == pytest.approx(0.2, abs=0.03)
    assert kept[1] / shown_wrong[1] == pytest.approx(0.5, abs=0.05)
    assert added[1] / (len(pool) / 2) == pytest.approx(0.3, abs=0.04)
    assert annotator.introduced_errors == kept[1]


def test_the_world_decides_the_annotator() -> None:
    pool = _pool(10)
    assert isinstance(annotator_for(pool, WorldConfig()), TeamAnnotator)
    v1 = annotator_for(pool, world_config("world-v1"), automation_bias=0.05)
    assert type(v1) is SimulatedAnnotator and v1.automation_bias == 0.05
    # The team's mean automation bias is the simulation's single-annotator default.
    assert np.mean([m.automation_bias for m in V2_TEAM]) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="not a probability"):
        TeamAnnotator(pool, (AnnotatorProfile(1.5, 0.0, 0.0),))


def test_the_rarest_third_is_decided_by_the_pool() -> None:
    pool = _pool(2000)
    assert rarest_third(pool, list(NAMES)) == ["t9", "t8", "t7"]
    assert rarest_third(pool, ["t0", "t1"]) == ["t1"]
