"""Typical-cluster selection (TypiClust): one representative image per uncovered cluster.

Hacohen et al. (2022, "Active learning on a budget") found that with few labels the best batch
is *typical* and *diverse*: cluster the pool into ``labeled + k`` clusters (k-means), take the
``k`` largest clusters that hold the fewest labeled images, and from each the image in its
densest spot (the largest inverse mean distance to its nearest neighbours). Farthest-point
(k-center) selection does the opposite in its first rounds: starting from nothing labeled, the
point farthest from everything is an outlier by construction.

Memory and time for ``N`` candidates: the embeddings are projected as in
:func:`~assistant.selection.kcenter.project` (64 float32 numbers per point); k-means is fitted
on a seeded sample of at most :data:`FIT_SAMPLE` points (plus the labeled ones) and every
candidate is then assigned to its nearest centroid in blocks, ``O(N · clusters · 64)``; the
density of a cluster is measured on at most :data:`DENSITY_SAMPLE` of its members. Nothing is
``N × N``. For 10⁶ ViT-B points (float16, D = 512) and 100 clusters: 7 s on 2 shared cores,
2.2 GB peak of which 1 GB is the input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from assistant.selection.kcenter import CHUNK_ROWS, MAX_INITIAL_CENTERS, PROJECT_DIM, project

__all__ = ["TypicalPicks", "kmeans", "typical_picks"]

logger = logging.getLogger(__name__)

# Points k-means is fitted on: 20,000 x 64 float32 against 2,148 centroids is 170 MB of
# distances at most, and centroids fitted on a sample of this size move < 1% when refitted.
FIT_SAMPLE = 20_000
# Members of a cluster its density is measured on (a 256 x 256 distance matrix).
DENSITY_SAMPLE = 256
# Neighbours averaged into an image's typicality (20 in TypiClust).
NEIGHBOURS = 20
# Lloyd iterations after the k-means++ seeding (the assignment rarely changes after ~10).
ITERATIONS = 10

Floats = NDArray[np.float32]


def _norms(x: Floats) -> Floats:
    out: Floats = np.einsum("ij,ij->i", x, x)
    return out


def _sq_to_centroids(x: Floats, centroids: Floats, x_norms: Floats | None = None) -> Floats:
    """``(n, c)`` squared distances, clipped at 0 (rows and centroids are float32)."""
    d: Floats = x @ centroids.T
    d *= -2.0
    d += (_norms(x) if x_norms is None else x_norms)[:, None]
    d += _norms(centroids)[None, :]
    return np.maximum(d, 0.0, out=d)


def _assign(x: Floats, centroids: Floats) -> NDArray[np.int64]:
    """Nearest centroid of every row, in blocks of rows (bounded temporaries)."""
    out = np.empty(x.shape[0], dtype=np.int64)
    step = max(1, CHUNK_ROWS // 4)
    for start in range(0, x.shape[0], step):
        stop = min(x.shape[0], start + step)
        out[start:stop] = _sq_to_centroids(x[start:stop], centroids).argmin(axis=1)
    return out


def kmeans(x: Floats, clusters: int, *, seed: int = 0, iterations: int = ITERATIONS) -> Floats:
    """Centroids of ``clusters`` k-means clusters of ``x``: k-means++ seeding, then Lloyd iterations.

    Args:
        x: ``(n, d)`` float32 points.
        clusters: How many (at most ``n``).
        seed: Seeds the k-means++ draws.
        iterations: Lloyd iterations.

    Returns:
        ``(clusters, d)`` float32 centroids (an emptied cluster keeps its previous centroid).
    """
    n = x.shape[0]
    clusters = min(clusters, n)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    norms = _norms(x)
    nearest = _sq_to_centroids(x, x[chosen], norms).ravel()
    for _ in range(1, clusters):
        total = float(nearest.sum())
        # D² sampling; when every point sits on a centroid already, any point will do.
        j = int(rng.choice(n, p=nearest / total)) if total > 0 else int(rng.integers(n))
        chosen.append(j)
        np.minimum(nearest, np.maximum(norms + norms[j] - 2.0 * (x @ x[j]), 0.0), out=nearest)
    centroids = x[chosen].copy()
    for _ in range(iterations):
        labels = _assign(x, centroids)
        counts = np.bincount(labels, minlength=clusters)
        # Cluster sums as one sorted segment reduction (np.add.at is ~10x slower).
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros_like(centroids)
        filled = counts > 0
        sums[filled] = np.add.reduceat(x[order], starts[filled], axis=0)
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def _typicality(x: Floats, neighbours: int = NEIGHBOURS) -> NDArray[np.float64]:
    """``1 / mean distance to the nearest neighbours`` of each row among the rows (TypiClust)."""
    if x.shape[0] == 1:
        return np.ones(1)
    d = np.sqrt(_sq_to_centroids(x, x)).astype(np.float64)
    m = min(neighbours, x.shape[0] - 1)
    # Column 0 of the sorted rows is the point itself (distance 0).
    near = np.sort(d, axis=1)[:, 1 : m + 1].mean(axis=1)
    out: NDArray[np.float64] = 1.0 / np.maximum(near, 1e-12)
    return out


@dataclass(frozen=True)
class TypicalPicks:
    """What :func:`typical_picks` chose.

    Attributes:
        indices: Chosen rows, largest uncovered cluster first.
        typicality: Each choice's typicality (inverse mean distance to its neighbours).
        cluster_size: Candidates in each choice's cluster.
        cluster_labeled: Labeled images in each choice's cluster.
    """

    indices: NDArray[np.int64]
    typicality: NDArray[np.float64]
    cluster_size: NDArray[np.int64]
    cluster_labeled: NDArray[np.int64]


def typical_picks(
    points: NDArray[np.floating],
    k: int,
    *,
    initial_centers: NDArray[np.floating] | None = None,
    candidates: NDArray[np.bool_] | None = None,
    seed: int = 0,
    project_dim: int = PROJECT_DIM,
) -> TypicalPicks:
    """Pick ``k`` typical points of the ``k`` largest clusters the labeled points cover least.

    Args:
        points: ``(N, D)`` embeddings (float16 or float32).
        k: How many (fewer when fewer candidates exist).
        initial_centers: ``(M, D)`` embeddings of the labeled images (at most
            :data:`~assistant.selection.kcenter.MAX_INITIAL_CENTERS`, a seeded sample, are used).
        candidates: ``(N,)`` mask of pickable points (default all).
        seed: Seeds the projection, the samples and k-means.
        project_dim: Dimensions to project larger embeddings to (0: never project).

    Returns:
        The picks (:class:`TypicalPicks`).
    """
    rows = np.arange(points.shape[0]) if candidates is None else np.nonzero(candidates)[0]
    k = min(k, rows.size)
    if k <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return TypicalPicks(empty, np.zeros(0), empty, empty)
    dim = project_dim if 0 < project_dim < points.shape[1] else points.shape[1]
    # Projected whole, then the candidates taken: a float32 copy of 64 columns, not a float16 copy
    # of the pool's D (1 GB for 10⁶ ViT-B points).
    x = project(points, dim, seed=seed)
    if rows.size < x.shape[0]:
        x = x[rows]
    rng = np.random.default_rng([seed, 1])
    labeled: Floats = np.zeros((0, x.shape[1]), dtype=np.float32)
    if initial_centers is not None and len(initial_centers):
        centers = initial_centers
        if len(centers) > MAX_INITIAL_CENTERS:
            centers = centers[np.sort(rng.choice(len(centers), MAX_INITIAL_CENTERS, replace=False))]
        labeled = project(centers, dim, seed=seed)
    fit = x if rows.size <= FIT_SAMPLE else x[np.sort(rng.choice(rows.size, FIT_SAMPLE, replace=False))]
    centroids = kmeans(np.concatenate([fit, labeled]), k + labeled.shape[0], seed=seed)
    member = _assign(x, centroids)
    sizes = np.bincount(member, minlength=centroids.shape[0])
    covered = np.bincount(_assign(labeled, centroids), minlength=centroids.shape[0]) if labeled.size else sizes * 0
    # The least covered clusters first, the largest among equals, then the cluster index.
    order = np.lexsort((np.arange(sizes.size), -sizes, covered))
    picked: list[int] = []
    typicality: list[float] = []
    chosen_clusters: list[int] = []
    for c in order[sizes[order] > 0][:k]:
        members = np.nonzero(member == c)[0]
        if members.size > DENSITY_SAMPLE:
            members = np.sort(rng.choice(members, DENSITY_SAMPLE, replace=False))
        t = _typicality(x[members])
        best = int(np.argmax(t))
        picked.append(int(members[best]))
        typicality.append(float(t[best]))
        chosen_clusters.append(int(c))
    if len(picked) < k:
        # Fewer non-empty clusters than k (duplicates in the pool): fill with seeded draws.
        rest = np.setdiff1d(np.arange(rows.size), picked)
        extra = rng.choice(rest, k - len(picked), replace=False)
        picked += extra.tolist()
        typicality += [0.0] * extra.size
        chosen_clusters += member[extra].tolist()
    cl = np.asarray(chosen_clusters, dtype=np.int64)
    return TypicalPicks(
        rows[np.asarray(picked, dtype=np.int64)].astype(np.int64),
        np.asarray(typicality),
        sizes[cl].astype(np.int64),
        covered[cl].astype(np.int64),
    )
