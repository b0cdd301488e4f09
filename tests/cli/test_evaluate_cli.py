"""`assistant evaluate`: metrics as a table or JSON, one-line errors with exit code 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from assistant.evaluate import evaluate
from cli.main import app

runner = CliRunner()

SCORES = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6], [0.7, 0.6, 0.1, 0.2]])
TARGETS = np.array([[1, -1, 0, -1], [-1, 1, -1, 1], [-1, -1, -1, -1]])


@pytest.fixture
def arrays(tmp_path):
    s, t = tmp_path / "s.npy", tmp_path / "t.npy"
    np.save(s, SCORES)
    np.save(t, TARGETS)
    return s, t


def test_json_output_has_exact_keys_and_values(arrays):
    s, t = arrays
    # Only 4 labels here, so the default K = 5 does not apply (tested on a wider matrix below).
    result = runner.invoke(app, ["evaluate", "--scores", str(s), "--targets", str(t), "--k", "3", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert list(metrics) == ["mAP", "F1@3", "P@3", "R@3"]
    assert metrics == pytest.approx(evaluate(SCORES, TARGETS, ks=(3,)), abs=1e-9)


def test_repeated_k_and_default_k(arrays, tmp_path):
    s, t = arrays
    result = runner.invoke(app, ["evaluate", "--scores", str(s), "--targets", str(t), "--k", "1", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["mAP", "F1@1", "P@1", "R@1", "F1@2", "P@2", "R@2"]
    wide_s, wide_t = tmp_path / "ws.npy", tmp_path / "wt.npy"
    np.save(wide_s, np.tile(SCORES, 2))
    np.save(wide_t, np.tile(TARGETS, 2))
    result = runner.invoke(app, ["evaluate", "--scores", str(wide_s), "--targets", str(wide_t), "--json"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["mAP", "F1@3", "P@3", "R@3", "F1@5", "P@5", "R@5"]


def test_table_output(arrays):
    s, t = arrays
    result = runner.invoke(app, ["evaluate", "--scores", str(s), "--targets", str(t), "--k", "2"])
    assert result.exit_code == 0, result.output
    expected = evaluate(SCORES, TARGETS, ks=(2,))
    for name, value in expected.items():
        assert name in result.stdout
        assert f"{value:.2f}" in result.stdout


def test_open_images_flag(arrays):
    s, t = arrays
    result = runner.invoke(
        app, ["evaluate", "--scores", str(s), "--targets", str(t), "--k", "1", "--open-images", "--json"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics == pytest.approx(evaluate(SCORES, TARGETS, ks=(1,), open_images=True), abs=1e-9)
    assert "mAP_weighted" in metrics


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist"),
        ("not_npy", "not a .npy file"),
        ("shape", "shape"),
        ("corrupt", "Cannot read"),
        ("k_too_large", "K = 9"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_1(arrays, tmp_path, case, match):
    s, t = arrays
    args = ["evaluate", "--scores", str(s), "--targets", str(t)]
    if case == "missing":
        args[2] = str(tmp_path / "absent.npy")
    elif case == "not_npy":
        (tmp_path / "s.csv").write_text("0.1,0.2\n")
        args[2] = str(tmp_path / "s.csv")
    elif case == "shape":
        np.save(tmp_path / "small.npy", SCORES[:2])
        args[2] = str(tmp_path / "small.npy")
    elif case == "corrupt":
        (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
        args[2] = str(tmp_path / "bad.npy")
    else:
        args += ["--k", "9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert match in lines[0]
