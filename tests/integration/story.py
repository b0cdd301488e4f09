"""A story over one live stack: steps that build on each other, yet pass alone and in any order.

Some end-to-end modules tell one project's story (connect, predict, annotate, train, stop ...): a
later step needs what the earlier ones did on the module's stack. pytest-randomly runs tests in
random order and a developer runs one alone, so each step, when it runs, first runs the steps
before it that have not run yet on this stack (their assertions included), and a step that
already ran as another's prerequisite passes at once: its assertions ran, on the same stack.
Each step asks for the fixtures of the steps before it too (its signature is their union), and the
first fixture of the first step identifies the stack.

Usage::

    story = Story()

    @story.step
    def test_connect(stack: Stack) -> None: ...

    @story.step
    def test_predict(stack: Stack, ls: LSClient) -> None: ...  # runs test_connect first when needed
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Story"]

F = TypeVar("F", bound=Callable[..., None])


class Story:
    """The ordered steps of one module's story, each run at most once per stack."""

    def __init__(self) -> None:
        self._steps: list[Callable[..., None]] = []
        self._params: dict[str, inspect.Parameter] = {}
        self._done: dict[int, set[str]] = {}

    def step(self, fn: F) -> F:
        """Register ``fn`` as the next step; the returned test runs the missing steps before it."""
        before = list(self._steps)
        self._steps.append(fn)
        for name, param in inspect.signature(fn).parameters.items():
            self._params.setdefault(name, param.replace(annotation=inspect.Parameter.empty))
        params = dict(self._params)  # this step's fixtures and every earlier step's
        key = next(iter(params))

        def call(step: Callable[..., None], fixtures: dict[str, Any]) -> None:
            step(**{name: fixtures[name] for name in inspect.signature(step).parameters})

        @functools.wraps(fn)
        def run(**fixtures: Any) -> None:
            done = self._done.setdefault(id(fixtures[key]), set())
            if fn.__name__ in done:
                return  # it ran, and passed, as a later step's prerequisite on this stack
            for prev in before:
                if prev.__name__ not in done:
                    call(prev, fixtures)
                    done.add(prev.__name__)
            call(fn, fixtures)
            done.add(fn.__name__)

        run.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]
