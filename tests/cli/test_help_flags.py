"""``--help`` shows flags as flags: no ``<bool>`` after ``--dry-run``, ``--json`` or ``--help``."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from cli.main import app


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_listed() -> None:
    assert ("select",) in COMMANDS and ("round", "status") in COMMANDS and ("doctor",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "assistant")
def test_no_flag_shows_a_value_type(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})

    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert re.search(r"--help\s+Show this message and exit", result.output)


def test_options_that_take_a_value_keep_their_type() -> None:
    result = CliRunner().invoke(app, ["select", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})

    assert re.search(r"--dry-run\s+Print the choice", result.output)
    assert "<int range>" in result.output and "<path>" in result.output


def test_selects_ranking_explains_its_score_column() -> None:
    from rich.console import Console

    from cli.select import SCORE_CAPTION, print_ranking

    console = Console(record=True, width=200)
    print_ranking(console, "Label next (hybrid)", [(1, 27, 1.47, "a"), (2, 9, 1.85, "b")], SCORE_CAPTION)

    text = console.export_text()
    assert "the rank, not the score, is the order." in text and text.index("rank:") > text.index("1.850")


def test_strategy_and_backbone_help_come_from_the_registries() -> None:
    from assistant.backbones import describe_backbone_kinds
    from assistant.selection import describe_strategies

    select = CliRunner().invoke(app, ["select", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    tag = CliRunner().invoke(app, ["tag", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})

    squashed = " ".join(select.output.replace("│", " ").split())
    for name, favours in describe_strategies().items():
        assert f"{name}: {' '.join(favours.split())}" in squashed
    squashed = " ".join(tag.output.replace("│", " ").split())
    for example in describe_backbone_kinds():
        assert f"'{example}'" in squashed
