"""``assistant simulate label-quality-ceiling``: the table, the JSON and the plot."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_the_ceiling_command_writes_its_points_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "ceiling"
    args = ["simulate", "label-quality-ceiling", "--seeds", "3", "--budget", "60", "--rounds", "2"]
    result = runner.invoke(
        app, [*args, "--fraction", "0.2", "--flag", "0.2", "--separations", "0.3,5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "label-quality-ceiling.json").read_text())
    weak, strong = document["points"]
    assert (weak["separation"], strong["separation"]) == (0.3, 5.0)
    assert weak["corrupted"] == strong["corrupted"] > 0 and weak["flagged"] == 12
    assert weak["map"] < strong["map"] and weak["found"] <= strong["found"]
    assert (out / "label-quality-ceiling.png").stat().st_size > 0
    assert "mAP of the scores" in result.output


def test_the_ceiling_command_refuses_bad_separations(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "label-quality-ceiling", "--separations", "1,x", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--separations" in result.output
