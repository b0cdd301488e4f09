"""Oracle selectors: upper bounds for active learning that only a simulation can compute.

A real strategy sees the model's scores and the image embeddings; an oracle also sees the ground
truth of the pool, which no project has before annotating. Oracles are therefore never registered
as strategies (``assistant select`` cannot use them). They answer one question in
``assistant simulate al``: how much could the classic criteria gain over random sampling with
this learner and this budget, if they were estimated perfectly? If an oracle that knows an image's
true loss does not beat random sampling, an uncertainty strategy, which only estimates that loss
from the model's scores, has nothing to find; likewise the tag count for cardinality strategies.

============== ====================================================================================
oracle-loss    the images the model in service gets most wrong: highest binary cross-entropy of its
               calibrated scores against the true tags over the options (what uncertainty sampling
               tries to guess)
oracle-dense   the images with the most true tags over the options (most positives per label spent;
               what a label-cardinality criterion such as MMC, Yang et al. 2009, tries to predict)
============== ====================================================================================

Both take the top ``n`` of the unannotated pool every round, ties by pool order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray

from assistant.inference import Tagger
from benchworld.simulation.annotator import LabeledImages
from benchworld.simulation.features import CachedFeatures
from benchworld.simulation.loop import Selector, SimulationState

__all__ = ["ORACLES", "is_oracle", "oracle_selector"]

_EPS = 1e-4


def _loss_scores(
    state: SimulationState, rows: NDArray[np.int64], truth: NDArray[np.bool_], features: CachedFeatures
) -> NDArray[np.float64]:
    tagger = Tagger(state.service, device=state.service.model.device, batch_size=256)
    feats = features.of(state.service).index(torch.from_numpy(rows))
    probs = np.clip(np.asarray(tagger.probabilities(feats, list(state.options)), dtype=np.float64), _EPS, 1 - _EPS)
    loss: NDArray[np.float64] = -np.where(truth, np.log(probs), np.log(1.0 - probs)).sum(axis=1)
    return loss


def _dense_scores(
    state: SimulationState, rows: NDArray[np.int64], truth: NDArray[np.bool_], features: CachedFeatures
) -> NDArray[np.float64]:
    del state, rows, features
    counts: NDArray[np.float64] = truth.sum(axis=1).astype(np.float64)
    return counts


_Score = Callable[[SimulationState, NDArray[np.int64], NDArray[np.bool_], CachedFeatures], NDArray[np.float64]]
_SCORES: dict[str, _Score] = {"oracle-loss": _loss_scores, "oracle-dense": _dense_scores}
#: The oracle selectors' names (module docstring).
ORACLES: tuple[str, ...] = tuple(_SCORES)


def is_oracle(name: str) -> bool:
    """Whether ``name`` is an oracle selector rather than a registered strategy."""
    return name in _SCORES


def oracle_selector(name: str, pool: LabeledImages, *, batch: int = 64) -> Selector:
    """A selector for :func:`~benchworld.simulation.loop.simulate_rounds` that looks at the truth.

    Args:
        name: One of :data:`ORACLES`.
        pool: The simulation's pool, with its ground truth.
        batch: Images per forward pass (``oracle-loss`` scores the pool with the model in service).

    Raises:
        KeyError: ``name`` is not an oracle.
    """
    score = _SCORES[name]
    features = CachedFeatures(pool.images, batch)

    def select(state: SimulationState, n: int) -> list[int]:
        rows = np.array([i for i in range(len(state.pool)) if i not in state.annotated], dtype=np.int64)
        truth = state.pool.targets(list(state.options))[rows] > 0
        values = score(state, rows, truth, features)
        order = np.argsort(-values, kind="stable")[:n]
        picked: list[int] = rows[order].tolist()
        return picked

    return select
