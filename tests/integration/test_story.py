"""``tests.integration.story``: a step runs the steps before it once, whichever runs first."""

from __future__ import annotations

import inspect

from tests.integration.story import Story


def test_a_step_run_first_runs_the_earlier_steps_once_and_they_then_pass_at_once() -> None:
    ran: list[str] = []
    story = Story()

    @story.step
    def first(stack: object) -> None:
        ran.append("first")

    @story.step
    def second(stack: object, extra: str) -> None:
        ran.append(f"second:{extra}")

    @story.step
    def third(stack: object) -> None:
        ran.append("third")

    assert list(inspect.signature(third).parameters) == ["stack", "extra"]  # the earlier steps' fixtures too
    stack = object()
    third(stack=stack, extra="x")
    first(stack=stack)
    second(stack=stack, extra="x")
    assert ran == ["first", "second:x", "third"]

    other = object()  # another stack (a rerun of the module) tells its story again
    second(stack=other, extra="y")
    assert ran[3:] == ["first", "second:y"]
