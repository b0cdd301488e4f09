"""The selection-strategy registry: ``register_strategy`` / ``list_strategies`` / ``create_strategy``.

Like timm's model registry: strategies register by decorator when :mod:`assistant.selection`
is imported, a name registered twice warns, and an unknown name raises an error that lists the
valid ones. The registry is never changed after import, so tests never patch it.

Example:
    >>> from assistant.selection import create_strategy, list_strategies
    >>> list_strategies()
    ['diversity', 'entropy', 'hybrid', 'novelty', 'random', 'uncertainty']
    >>> strategy = create_strategy("hybrid", seed=3)
    >>> chosen = strategy.select(pool, k=100)          # doctest: +SKIP
"""

from __future__ import annotations

import abc
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from assistant.errors import ConfigError
from assistant.selection.pool import SelectionPool

__all__ = ["Selection", "Strategy", "create_strategy", "describe_strategies", "list_strategies", "register_strategy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """What a strategy chose.

    Attributes:
        strategy: The strategy's name.
        indices: Chosen pool rows, best first (the order annotators should follow).
        scores: Each choice's acquisition score when it was chosen (the strategy's own scale;
            higher is more wanted).
        reasons: One short sentence per choice: why it was chosen.
    """

    strategy: str
    indices: NDArray[np.int64]
    scores: NDArray[np.float64]
    reasons: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class Strategy(abc.ABC):
    """A selection strategy: chooses ``k`` pool images to label next.

    Subclasses set :attr:`name` and :attr:`favours` and implement :meth:`select`. Any randomness
    comes from ``seed``, so the same pool and seed give the same choice.

    Args:
        seed: Seed of the strategy's randomness (random draws, projections, tie breaks).
    """

    #: The registry name.
    name: ClassVar[str] = ""
    #: One sentence: which images the strategy favours (shown by ``assistant select --help``).
    favours: ClassVar[str] = ""
    #: Whether the strategy needs image embeddings in the pool.
    needs_embeddings: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abc.abstractmethod
    def select(self, pool: SelectionPool, k: int) -> Selection:
        """Choose up to ``k`` valid pool rows (fewer when the pool has fewer).

        Args:
            pool: The scored pool.
            k: How many to choose.

        Returns:
            The choice, best first.

        Raises:
            ConfigError: The pool lacks what the strategy needs (embeddings).
        """

    def _check(self, pool: SelectionPool, k: int) -> int:
        if k < 1:
            raise ConfigError(f"cannot select {k} images", fix="ask for k >= 1")
        if self.needs_embeddings and pool.embeddings is None:
            raise ConfigError(
                f"the {self.name} strategy needs image embeddings, and the pool has none",
                fix="build the pool with embeddings (PoolBuilder(dim=...)), or use uncertainty or entropy",
            )
        return min(k, pool.n_valid)


S = TypeVar("S", bound=type[Strategy])

_registry: dict[str, type[Strategy]] = {}
#: Read-only view of the registered strategies, name -> class.
STRATEGIES: MappingProxyType[str, type[Strategy]] = MappingProxyType(_registry)


def register_strategy(cls: S) -> S:
    """Class decorator: register a :class:`Strategy` subclass under its ``name`` (warns on a clash)."""
    if not cls.name or not cls.favours:
        raise ConfigError(f"strategy {cls.__qualname__} must set `name` and `favours`")
    if cls.name in _registry:
        warnings.warn(f"selection strategy {cls.name!r} registered twice; the last one wins", stacklevel=2)
    _registry[cls.name] = cls
    return cls


def list_strategies() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_registry)


def describe_strategies() -> dict[str, str]:
    """Name -> what the strategy favours."""
    return {name: _registry[name].favours for name in list_strategies()}


def create_strategy(name: str, *, seed: int = 0, **options: Any) -> Strategy:
    """A strategy by name.

    Args:
        name: A registered name (:func:`list_strategies`).
        seed: Seed of its randomness.
        **options: The strategy's own settings (e.g. ``candidates_per_pick`` for ``hybrid``).

    Raises:
        ConfigError: Unknown name or option.
    """
    factory: Callable[..., Strategy] | None = _registry.get(name)
    if factory is None:
        raise ConfigError(f"unknown selection strategy {name!r}", fix="use one of: " + ", ".join(list_strategies()))
    try:
        return factory(seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"invalid options for the {name} strategy: {sorted(options)}", why=str(exc)) from None
