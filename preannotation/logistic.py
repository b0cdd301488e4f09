"""Small logistic fits by damped Newton steps: the one solver behind every Platt map.

Used by the model core's calibrator (:mod:`assistant.calibration`) and by a project's
recalibration (:mod:`preannotation.recalibration`). The problems are 1-2 dimensional and convex,
so a Newton step with backtracking converges in ~10 steps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["fit_logistic", "fit_monotone", "logit", "sigmoid"]

FloatArray = NDArray[np.float64]
# Probabilities are clipped this far from 0 and 1 before taking logits: a served probability of
# exactly 1.0 (rounded to 4 decimals) would otherwise be an infinite feature. logit(1e-6) ~ -13.8.
_EPS = 1e-6


def sigmoid(m: FloatArray) -> FloatArray:
    """``1 / (1 + exp(-m))`` without overflow (``exp(-softplus(-m))``)."""
    out: FloatArray = np.exp(-np.logaddexp(0.0, -m))
    return out


def logit(p: ArrayLike) -> FloatArray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[1e-6, 1 - 1e-6]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    out: FloatArray = np.log(q) - np.log1p(-q)
    return out


def fit_logistic(
    x: FloatArray,
    t: FloatArray,
    prior_mean: FloatArray,
    prior: float,
    max_iter: int,
    weights: FloatArray | None = None,
) -> FloatArray:
    """Minimise ``Σ w·BCE(sigmoid(x·θ), t) + prior/2·|θ - prior_mean|²`` by damped Newton steps.

    Args:
        x: ``(n, d)`` features (a column of ones for an intercept).
        t: ``(n,)`` targets in [0, 1] (soft targets allowed).
        prior_mean: ``(d,)`` where the L2 prior pulls θ.
        prior: Strength of that pull (> 0 keeps every Newton system solvable).
        max_iter: Newton steps at most.
        weights: ``(n,)`` non-negative entry weights; all 1 when None.

    Returns:
        θ, shape ``(d,)``.
    """
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)

    def loss(theta: FloatArray) -> float:
        m = x @ theta
        bce = t * np.logaddexp(0.0, -m) + (1.0 - t) * np.logaddexp(0.0, m)
        return float((w * bce).sum() + 0.5 * prior * np.sum((theta - prior_mean) ** 2))

    theta = prior_mean.copy()
    eye = np.eye(x.shape[1])
    current = loss(theta)
    for _ in range(max_iter):
        p = sigmoid(x @ theta)
        grad = x.T @ (w * (p - t)) + prior * (theta - prior_mean)
        hess = x.T @ (x * (w * p * (1.0 - p))[:, None]) + prior * eye
        step = np.linalg.solve(hess, grad)
        decrease = float(grad @ step)
        if decrease < 1e-12:
            break
        # Backtracking (Armijo) keeps the step safe where the Hessian is nearly flat.
        rate = 1.0
        while rate > 1e-8:
            candidate = theta - rate * step
            new = loss(candidate)
            if new <= current - 1e-4 * rate * decrease:
                break
            rate *= 0.5
        else:
            break
        theta, current = candidate, new
    return theta


def fit_monotone(
    z: FloatArray,
    t: FloatArray,
    prior_mean: FloatArray,
    prior: float,
    max_iter: int,
    weights: FloatArray | None = None,
) -> FloatArray:
    """A 1-D logistic map ``sigmoid(a·z + b)`` with the slope ``a`` constrained to >= 0.

    Returns:
        ``[a, b]``. When the free optimum has a negative slope, the constrained one lies on
        ``a = 0`` (the problem is convex): a constant probability, fitted alone.
    """
    x = np.stack([z, np.ones_like(z)], axis=1)
    theta = fit_logistic(x, t, prior_mean, prior, max_iter, weights)
    if theta[0] >= 0.0:
        return theta
    (b,) = fit_logistic(x[:, 1:], t, prior_mean[1:], prior, max_iter, weights)
    return np.array([0.0, b])
