"""`assistant demo`, `assistant tag`, and help text on every command of the Typer app.

The bundled model (assets/world-tiny) is moved to a missing path in these tests, so that they run
the tiny random stand-in (test-tiny: 32 px, under a second) whether or not the bundled model was
built, and so that the fallback itself is what is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import REPO_ROOT
from tests.workers._helpers import write_images

runner = CliRunner()
SAMPLES = REPO_ROOT / "samples"


@pytest.fixture
def missing_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The bundled model's path, pointed at a folder that does not exist (the default base model)."""
    from state import settings

    missing = tmp_path / "assets" / "world-tiny"
    monkeypatch.setattr(settings, "BUNDLED_MODEL_DIR", missing)
    monkeypatch.setenv("ASSISTANT_BASE_MODEL", str(missing))
    monkeypatch.setenv("ASSISTANT_DEVICE", "cpu")
    settings.get_settings.cache_clear()
    yield missing
    settings.get_settings.cache_clear()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-tiny MKT checkpoint that was "trained" on cat and dog (its seen labels)."""
    import torch

    from assistant.calibration import Calibrator
    from assistant.checkpoint import load_model, save_checkpoint
    from assistant.labels import LabelSet

    torch.manual_seed(0)
    loaded = load_model("test-tiny", allow_random=True)
    loaded.model.seen_labels = LabelSet(("cat", "dog"))
    # A gentle slope spreads the random model's scores over (0, 1), so that ranks mean something.
    loaded.calibrator = Calibrator(slope=10.0, intercept=0.0, threshold=0.5, method="default")
    directory = tmp_path_factory.mktemp("ckpt") / "tiny-cli"
    save_checkpoint(loaded, directory, version="tiny-cli")
    return directory


def test_demo_prints_tags_for_every_sample_image(missing_bundled_model: Path) -> None:
    result = runner.invoke(app, ["demo", "--samples", str(SAMPLES), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = list(json.loads((SAMPLES / "labels.json").read_text())["labels"])
    assert len(names) >= 4
    for name in names:
        assert name in result.stdout, f"no tags printed for {name}"
    # Each image's table lists scored tags (a score column with values in [0, 1]).
    assert result.stdout.count("truth:") == len(names)
    # How many tags it would pre-annotate per image, how many are right, and the saving in all.
    assert result.stdout.count("pre-annotates ") == len(names)
    assert "tags per image" in result.stdout and "from scratch" in result.stdout
    # A random stand-in is never silent: a note in the output and a warning on stderr.
    assert "RANDOMLY INITIALISED" in result.stdout and "warning:" in result.stderr
    assert str(missing_bundled_model) in result.stderr


def test_tag_ranks_and_marks_seen_and_novel(tmp_path: Path, trained_checkpoint: Path) -> None:
    images = write_images(tmp_path / "imgs", 2)
    labels = "cat,dog,zebra,snow"
    args = ["tag", *map(str, images), "--labels", labels, "--model", str(trained_checkpoint), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model_version"] == "tiny-cli" and doc["random_model"] is False and doc["warning"] is None
    assert [Path(item["image"]).name for item in doc["images"]] == [p.name for p in images]
    for item in doc["images"]:
        tags = item["tags"]
        assert sorted(t["label"] for t in tags) == sorted(labels.split(","))
        scores = [t["score"] for t in tags]
        assert scores == sorted(scores, reverse=True), "tags are ranked by score"
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert {t["label"]: t["seen"] for t in tags} == {"cat": True, "dog": True, "zebra": False, "snow": False}
    assert "warning" not in result.stderr

    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "version tiny-cli" in table.stdout and all(p.name in table.stdout for p in images)
    assert "seen" in table.stdout and "novel" in table.stdout


def test_tag_without_a_model_says_it_is_random(tmp_path: Path, missing_bundled_model: Path) -> None:
    images = write_images(tmp_path / "imgs", 1)
    result = runner.invoke(app, ["tag", str(images[0]), "--labels", "cat,dog", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout stays pure JSON: the warning goes to stderr
    assert doc["random_model"] is True and doc["model"] == "test-tiny"
    assert "RANDOMLY INITIALISED" in doc["warning"] and str(missing_bundled_model) in doc["warning"]
    assert doc["model_version"].startswith("random:")
    assert "warning:" in result.stderr and "RANDOMLY INITIALISED" in result.stderr


def test_a_configured_model_that_fails_is_an_error_not_a_random_model(
    tmp_path: Path, missing_bundled_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from state import settings

    images = write_images(tmp_path / "imgs", 1)
    monkeypatch.setenv("ASSISTANT_BASE_MODEL", str(tmp_path / "elsewhere" / "model"))
    settings.get_settings.cache_clear()
    result = runner.invoke(app, ["tag", str(images[0]), "--labels", "cat", "--json"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stdout == ""
    # --model never falls back either, even to a missing bundled model's stand-in.
    missing = runner.invoke(app, ["tag", str(images[0]), "--labels", "cat", "--model", str(missing_bundled_model)])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ")


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    # Typer vendors its own click (typer._click): groups are told by their sub-commands.
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


def test_every_command_and_group_has_help_text() -> None:
    commands = list(_walk(typer.main.get_command(app), ()))
    names = {" ".join(path) for path, _ in commands}
    # The app's groups and commands are all found (not an empty walk).
    assert {"tag", "demo", "evaluate", "serve", "worker", "round", "models", "agent", "world", "simulate"} <= names
    assert sum(bool(getattr(c, "commands", None)) for _, c in commands) >= 5
    for path, command in commands:
        where = " ".join(("assistant", *path))
        assert (command.help or "").strip(), f"`{where}` has no help text"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"`{where} --help` failed: {result.output}"
        first_line = command.help.strip().splitlines()[0][:40]
        assert "Usage:" in result.stdout and first_line in " ".join(result.stdout.split())
        for param in command.params:
            if param.param_type_name == "option" and "--help" not in param.opts:
                assert (param.help or "").strip(), f"`{where}` option {param.opts[0]} has no help text"
