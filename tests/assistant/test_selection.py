"""Selection strategies: the registry, what each strategy favours, determinism, bounded k-center."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from numpy.typing import NDArray

from assistant.errors import ConfigError, DataError
from assistant.selection import (
    PoolBuilder,
    SelectionPool,
    create_strategy,
    describe_strategies,
    image_entropy,
    image_saving,
    image_uncertainty,
    k_center_greedy,
    list_strategies,
    project,
    register_strategy,
    tag_uncertainty,
)
from assistant.selection.strategies import Uncertainty
from assistant.selection.typical import kmeans, typical_picks
from preannotation import EditCosts, expected_cost, scratch_cost, show_mask

LABELS = [f"l{i}" for i in range(6)]
ALL = ["balanced", "diversity", "entropy", "hybrid", "novelty", "random", "saving", "uncertainty"]


def _pool(n: int = 200, seed: int = 0, **kwargs) -> SelectionPool:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, len(LABELS))) ** 3
    emb = rng.standard_normal((n, 16))
    return SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.4), LABELS, embeddings=emb, **kwargs)


def test_the_registry_lists_documents_and_refuses_unknown_names() -> None:
    assert list_strategies() == ALL
    assert all(describe_strategies()[name] for name in ALL)
    with pytest.raises(ConfigError, match="balanced, diversity, entropy, hybrid, novelty, random, saving, uncertainty"):
        create_strategy("margin")
    with pytest.raises(ConfigError, match="(?i)invalid options"):
        create_strategy("uncertainty", beta=3)
    with pytest.warns(UserWarning, match="registered twice"):
        register_strategy(Uncertainty)  # the same class again: the registry is unchanged
    assert list_strategies() == ALL


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_returns_k_distinct_valid_rows_and_is_seeded(name: str) -> None:
    valid = np.ones(200, dtype=bool)
    valid[::3] = False
    pool = _pool(valid=valid, novel_labels=["l1", "l4"], labeled_embeddings=np.ones((3, 16)))
    first = create_strategy(name, seed=7).select(pool, 25)
    again = create_strategy(name, seed=7).select(pool, 25)
    assert len(first) == 25 == len(set(first.indices.tolist())) == len(first.reasons)
    assert pool.valid[first.indices].all()
    np.testing.assert_array_equal(first.indices, again.indices)
    assert all(isinstance(r, str) and r for r in first.reasons)
    assert first.strategy == name
    # Asking for more than the pool holds gives the whole valid pool.
    assert len(create_strategy(name, seed=7).select(pool, 10_000)) == pool.n_valid


def test_random_depends_on_the_seed() -> None:
    pool = _pool()
    a = create_strategy("random", seed=1).select(pool, 20).indices
    b = create_strategy("random", seed=2).select(pool, 20).indices
    assert set(a.tolist()) != set(b.tolist())


def test_uncertainty_is_one_minus_the_label_studio_prediction_score() -> None:
    from backends.convert import confidence

    rng = np.random.default_rng(3)
    probs, thresholds = rng.random((50, 9)), rng.uniform(0.1, 0.9, 9)
    u = image_uncertainty(probs, thresholds)
    expected = [1.0 - confidence(row.tolist(), thresholds.tolist()) for row in probs]
    np.testing.assert_allclose(u, expected, atol=1e-5)
    # The fused reduction of the pool builder gives the same numbers.
    pool = SelectionPool.from_arrays(probs, thresholds, [str(i) for i in range(9)])
    np.testing.assert_allclose(pool.uncertainty, u, atol=1e-5)
    np.testing.assert_allclose(pool.entropy, image_entropy(probs), atol=1e-5)
    np.testing.assert_array_equal(pool.top_tag, tag_uncertainty(probs, thresholds).argmax(axis=1))


def test_uncertainty_prefers_borderline_tags_and_entropy_prefers_ambiguity_everywhere() -> None:
    thresholds = np.full(len(LABELS), 0.2)
    probs = np.zeros((4, len(LABELS)))
    probs[0, :3] = 0.2  # three tags exactly at their thresholds, the rest sure absences
    probs[1] = 0.5  # every tag at 0.5: far above a 0.2 threshold, but maximally ambiguous
    probs[2] = 0.95
    probs[3, :] = 0.01
    pool = SelectionPool.from_arrays(probs, thresholds, LABELS)
    assert create_strategy("uncertainty").select(pool, 1).indices.tolist() == [0]
    assert create_strategy("entropy").select(pool, 1).indices.tolist() == [1]
    assert "0.20 vs threshold 0.20" in create_strategy("uncertainty").select(pool, 1).reasons[0]


def test_novelty_takes_turns_over_the_novel_tags_and_falls_back_without_any() -> None:
    probs = np.full((30, len(LABELS)), 0.1)
    probs[:10, 1] = np.linspace(0.99, 0.9, 10)  # l1 scores high on 10 images
    probs[10:13, 4] = [0.6, 0.5, 0.4]  # l4 scores lower, on 3 others
    pool = SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.5), LABELS, novel_labels=["l1", "l4"])
    chosen = create_strategy("novelty").select(pool, 4)
    assert chosen.indices.tolist() == [0, 10, 1, 11]  # alternating, each tag's best first
    assert "likely novel tag 'l4'" in chosen.reasons[1]
    plain = SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.5), LABELS)
    fallback = create_strategy("novelty").select(plain, 3)
    assert fallback.reasons[0].startswith("no novel tags")
    assert fallback.indices.tolist() == create_strategy("uncertainty").select(plain, 3).indices.tolist()


def test_balanced_shares_the_batch_among_the_labels_rare_ones_first() -> None:
    # 90 images sit at l0's boundary (a frequent label), 6 at l1's, 4 at l2's; l0's images are
    # also the most uncertain, so uncertainty alone would spend the whole batch on l0.
    n = 100
    probs = np.full((n, 3), 0.05)
    probs[:90, 0] = 0.5 - np.linspace(0.0, 0.05, 90)
    probs[90:96, 1] = 0.3 - np.linspace(0.0, 0.05, 6)
    probs[96:, 2] = 0.25 - np.linspace(0.0, 0.05, 4)
    pool = SelectionPool.from_arrays(probs, np.full(3, 0.5), ["l0", "l1", "l2"])
    assert set(pool.top_tag[:90]) == {0} and set(pool.top_tag[90:96]) == {1} and set(pool.top_tag[96:]) == {2}
    assert set(create_strategy("uncertainty").select(pool, 9).indices.tolist()) <= set(range(90))
    picked = create_strategy("balanced").select(pool, 9)
    tags = pool.top_tag[picked.indices].tolist()
    assert tags[:3] == [2, 1, 0]  # the rarest label takes the first turn
    assert [tags.count(j) for j in range(3)] == [3, 3, 3]
    # Within a label, its most uncertain image first.
    assert picked.indices[0] == 96 and picked.indices[1] == 90 and picked.indices[2] == 0
    assert "balanced turn of 'l2'" in picked.reasons[0]
    # When a rare label runs out, the others fill the batch.
    big = create_strategy("balanced").select(pool, 30)
    assert [pool.top_tag[big.indices].tolist().count(j) for j in range(3)] == [20, 6, 4]


def _clusters(per: int = 20, centers: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = np.eye(centers, 8) * 10
    points = np.concatenate([m + 0.1 * rng.standard_normal((per, 8)) for m in means])
    return points, np.repeat(np.arange(centers), per)


def test_diversity_covers_what_the_labeled_images_do_not() -> None:
    points, cluster = _clusters()
    probs = np.full((len(points), len(LABELS)), 0.1)
    labeled = points[cluster == 0][:3]
    pool = SelectionPool.from_arrays(
        probs, np.full(len(LABELS), 0.5), LABELS, embeddings=points, labeled_embeddings=labeled
    )
    chosen = create_strategy("diversity").select(pool, 4)
    assert sorted(cluster[chosen.indices].tolist()) == [1, 2, 3, 4]
    assert "from the nearest labeled or chosen image" in chosen.reasons[0]


def test_hybrid_spreads_a_batch_that_uncertainty_would_spend_on_one_cluster() -> None:
    points, cluster = _clusters(per=20, centers=3)
    probs = np.full((len(points), len(LABELS)), 0.02)
    probs[cluster == 0, 0] = 0.5  # cluster 0: the most uncertain images, all alike
    probs[cluster == 1, 0] = 0.35  # cluster 1: nearly as uncertain, elsewhere
    pool = SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.5), LABELS, embeddings=points)
    by_uncertainty = create_strategy("uncertainty").select(pool, 4)
    hybrid = create_strategy("hybrid", candidates_per_pick=10).select(pool, 4)
    assert set(cluster[by_uncertainty.indices].tolist()) == {0}
    assert {0, 1} <= set(cluster[hybrid.indices].tolist())
    assert 2 not in set(cluster[hybrid.indices].tolist())  # certain images are never candidates
    narrow = create_strategy("hybrid", candidates_per_pick=1).select(pool, 4)
    assert set(narrow.indices.tolist()) == set(by_uncertainty.indices.tolist())
    with pytest.raises(ConfigError):
        create_strategy("hybrid", candidates_per_pick=0.5)


def _clusters_and_outliers(seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Clusters of 40, 30 and 20 points (labels 0-2) and 3 lone outliers (label -1) far from all."""
    rng = np.random.default_rng(seed)
    sizes = (40, 30, 20)
    means = np.eye(3, 8) * 10
    points = [m + 0.8 * rng.standard_normal((n, 8)) for m, n in zip(means, sizes, strict=True)]
    outliers = -10 * np.eye(3, 8) - 5 * np.roll(np.eye(3, 8), 1, axis=0)  # opposite every cluster
    cluster = np.concatenate([np.repeat(np.arange(3), sizes), np.full(3, -1)])
    return np.concatenate([*points, outliers]), cluster


def test_typical_picks_take_the_densest_image_of_each_least_covered_cluster() -> None:
    points, cluster = _clusters_and_outliers()
    picks = typical_picks(points, 3, seed=0, project_dim=0)
    assert cluster[picks.indices].tolist() == [0, 1, 2]  # the largest cluster first, no outlier
    # Every point belongs to one of the 3 clusters (the outliers to whichever is nearest).
    assert picks.cluster_size.sum() == len(points) and (picks.cluster_size >= [40, 30, 20]).all()
    assert picks.cluster_labeled.tolist() == [0, 0, 0]
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    for c, row in zip(range(3), picks.indices.tolist(), strict=True):
        members = np.nonzero(cluster == c)[0]
        to_mean = np.linalg.norm(unit[members] - unit[members].mean(axis=0), axis=1)
        assert to_mean[members.tolist().index(row)] <= np.quantile(to_mean, 0.5)  # central, not a fringe point
    covered = typical_picks(points, 2, initial_centers=points[cluster == 0][:5], seed=0, project_dim=0)
    assert sorted(cluster[covered.indices].tolist()) == [1, 2]  # the labeled cluster is covered already
    np.testing.assert_array_equal(typical_picks(points, 3, seed=0, project_dim=0).indices, picks.indices)
    # More than the candidates hold: every candidate, once.
    mask = cluster == 2
    assert sorted(typical_picks(points, 50, candidates=mask, seed=1).indices.tolist()) == np.nonzero(mask)[0].tolist()


def test_kmeans_finds_well_separated_centres() -> None:
    points, cluster = _clusters(per=30, centers=4)
    centroids = kmeans(points.astype(np.float32), 4, seed=2)
    found = sorted(np.linalg.norm(points[:, None] - centroids[None], axis=-1).argmin(axis=1).tolist())
    assert len(set(found)) == 4
    means = np.stack([points[cluster == c].mean(axis=0) for c in range(4)])
    assert np.linalg.norm(means[:, None] - centroids[None], axis=-1).min(axis=1).max() < 0.1


def test_hybrid_starts_cold_with_typical_images_until_the_model_is_calibrated() -> None:
    points, cluster = _clusters_and_outliers()
    probs = np.full((len(points), len(LABELS)), 0.02)
    probs[cluster == -1, 0] = 0.5  # "uncertain" only against an uncalibrated prior
    cold = SelectionPool.from_arrays(probs, np.full(6, 0.5), LABELS, embeddings=points, calibrated=False)
    chosen = create_strategy("hybrid", seed=3).select(cold, 3)
    assert sorted(cluster[chosen.indices].tolist()) == [0, 1, 2]  # typical images, not the outliers
    assert chosen.reasons[0].startswith("uncalibrated model, so by typicality")
    assert "(0 labeled)" in chosen.reasons[0]
    # Farthest-point diversity, the cold start it replaces, spends the batch on the outliers.
    assert -1 in cluster[create_strategy("diversity", seed=3).select(cold, 3).indices].tolist()
    warm = SelectionPool.from_arrays(probs, np.full(6, 0.5), LABELS, embeddings=points)
    assert -1 in cluster[create_strategy("hybrid", seed=3).select(warm, 3).indices].tolist()


def test_a_cold_start_says_when_an_image_is_alone_in_its_cluster() -> None:
    # As many picks as images: every cluster holds one image ("a cluster of 1 images" read oddly).
    points = np.random.default_rng(4).normal(size=(4, 8))
    probs = np.full((4, len(LABELS)), 0.02)
    cold = SelectionPool.from_arrays(probs, np.full(6, 0.5), LABELS, embeddings=points, calibrated=False)

    chosen = create_strategy("hybrid", seed=0).select(cold, 4)

    assert len(chosen) == 4
    assert all(r.endswith("the only image of its cluster (0 labeled)") for r in chosen.reasons), chosen.reasons
    assert not any("1 images" in r for r in chosen.reasons)


def test_strategies_that_need_embeddings_say_so() -> None:
    pool = SelectionPool.from_arrays(np.random.default_rng(0).random((10, 6)), np.full(6, 0.5), LABELS)
    for name in ("diversity", "hybrid"):
        with pytest.raises(ConfigError, match="embeddings"):
            create_strategy(name).select(pool, 3)
    with pytest.raises(ConfigError, match="k >= 1"):
        create_strategy("uncertainty").select(pool, 0)


def test_k_center_greedy_is_within_twice_the_optimal_covering_radius() -> None:
    rng = np.random.default_rng(5)
    for trial in range(5):
        points = rng.standard_normal((14, 3)).astype(np.float32)
        picked, _ = k_center_greedy(points, 3, seed=trial, project_dim=0)
        unit = points / np.linalg.norm(points, axis=1, keepdims=True)  # greedy works on normalised rows
        dist = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
        radius = dist[:, picked].min(axis=1).max()
        optimal = min(dist[:, list(c)].min(axis=1).max() for c in itertools.combinations(range(14), 3))
        assert radius <= 2 * optimal + 1e-5


def test_k_center_greedy_projects_large_embeddings_and_keeps_far_points_far() -> None:
    points, cluster = _clusters(per=30, centers=4)
    wide = np.concatenate([points, np.zeros((len(points), 248))], axis=1).astype(np.float16)  # D = 256
    projected = project(wide, 64, seed=1)
    assert projected.shape == (len(points), 64) and projected.dtype == np.float32
    picked, gaps = k_center_greedy(wide, 4, seed=1, project_dim=64)
    assert sorted(cluster[picked].tolist()) == [0, 1, 2, 3]
    assert np.isinf(gaps[0]) and (gaps[1:] > 0.5).all()


def test_the_pool_builder_accepts_chunks_in_any_order_and_marks_missing_rows_invalid() -> None:
    rng = np.random.default_rng(2)
    probs, emb = rng.random((50, 6)), rng.standard_normal((50, 4)).astype(np.float16)
    whole = SelectionPool.from_arrays(probs, np.full(6, 0.3), LABELS, embeddings=emb, novel_labels=["l5"])
    builder = PoolBuilder(52, LABELS, np.full(6, 0.3), dim=4, novel_labels=["l5"])
    for rows in (np.arange(30, 50), np.arange(0, 30)[::-1]):
        builder.add(rows, probs[rows], emb[rows])
    chunked = builder.build()
    np.testing.assert_allclose(chunked.uncertainty[:50], whole.uncertainty)
    np.testing.assert_array_equal(chunked.embeddings[:50], emb)
    assert chunked.novel_scores is not None and chunked.novel_scores.shape == (52, 1)
    assert chunked.valid[:50].all() and not chunked.valid[50:].any()
    assert chunked.nbytes() > 0
    for name in ALL:
        assert (create_strategy(name).select(chunked, 60).indices < 50).all()
    with pytest.raises(DataError):
        builder.add([0, 1], probs[:3], emb[:3])
    with pytest.raises(DataError, match="(?i)novel"):
        PoolBuilder(3, LABELS, np.full(6, 0.3), novel_labels=["unicorn"])
    with pytest.raises(DataError, match="(?i)embeddings"):
        builder.add([0], probs[:1])


def test_the_strategy_modules_raise_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_strategy("hybrid").select(_pool(), 5)


def test_image_saving_is_the_share_of_from_scratch_edits_the_rule_expects_to_save() -> None:
    np.testing.assert_allclose(image_saving([[0.9, 0.1], [0.4, 0.4]], 0.5), [0.8, 0.0], atol=1e-6)
    # Cheap adds (break-even 0.25) show both 0.4 tags: (0.15 + 0.15) / (0.75 · 0.8) = 0.5.
    np.testing.assert_allclose(image_saving([[0.4, 0.4]], 0.25), [0.5], atol=1e-6)
    rng = np.random.default_rng(3)
    for costs in (EditCosts(), EditCosts(add=3, remove=1), EditCosts(add=1, remove=2)):
        for p in rng.random((20, 8)) ** 2:
            shown = show_mask(p, costs)
            expected = 1.0 - expected_cost(p, shown, costs) / scratch_cost(p, costs)
            assert image_saving(p[None], costs.break_even)[0] == pytest.approx(max(expected, 0.0), abs=1e-5)


def test_saving_prefers_uncertain_images_whose_preannotations_save_edits() -> None:
    points, cluster = _clusters(per=20, centers=3)
    probs = np.full((len(points), len(LABELS)), 0.02)
    probs[cluster == 0, 0] = 0.45  # cluster 0: borderline, nothing worth showing
    probs[cluster == 1, 0] = 0.35  # cluster 1: a little less borderline, ...
    probs[cluster == 1, 1] = 0.95  # ... and a tag the rule shows, nearly always right
    plain = SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.5), LABELS, embeddings=points)
    pool = SelectionPool.from_arrays(probs, np.full(len(LABELS), 0.5), LABELS, embeddings=points, break_even=0.5)
    assert pool.saving is not None and plain.saving is None
    hybrid = create_strategy("hybrid", candidates_per_pick=1).select(pool, 4)
    saving = create_strategy("saving", candidates_per_pick=1).select(pool, 4)
    assert set(cluster[hybrid.indices].tolist()) == {0}
    assert set(cluster[saving.indices].tolist()) == {1}
    assert all("expected saving" in r for r in saving.reasons)
    # A pool without a break-even point is chosen as the hybrid chooses.
    same = create_strategy("saving", candidates_per_pick=1).select(plain, 4)
    np.testing.assert_array_equal(same.indices, hybrid.indices)
    with pytest.raises(DataError, match="break-even"):
        PoolBuilder(3, LABELS, np.full(len(LABELS), 0.5), break_even=1.0)
