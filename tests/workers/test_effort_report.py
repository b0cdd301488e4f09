"""The round report's effort section: a plot and a table of edits per task against from scratch, by version."""

from __future__ import annotations

from pathlib import Path

from preannotation import EditCosts
from state.effort_records import CountedAnnotation, TagAnswer
from state.ledger import open_ledger
from workers.effort_report import EFFORT_PLOT, SECTION, add_effort_section


def test_the_section_is_added_once_with_its_plot(tmp_path: Path) -> None:
    ledger = open_ledger(None, home=tmp_path)
    report = tmp_path / "r0002" / "report.md"
    report.parent.mkdir()
    report.write_text("# Project 3, round r0002\n\nmAP ...\n")
    try:
        assert add_effort_section(ledger, 3, report, "mkt-b", EditCosts()) is None  # nothing counted yet
        assert "No annotation was counted yet" in report.read_text()
        batch = []
        for i in range(1, 61):
            version = "mkt-a+11" if i <= 30 else "mkt-b+11"
            # The first version shows a wrong tag on every task, the second one only right tags.
            shown = {"cat", "dog"} if version.startswith("mkt-a") else {"cat"}
            answers = tuple(TagAnswer(t, t in shown, t == "cat" or t == "sofa") for t in ("cat", "dog", "sofa"))
            batch.append(
                CountedAnnotation(i, i, i, i, "parent", version, "platt", None, answers, f"2026-03-02T{i:05d}")
            )
        ledger.effort.record(3, through=60, counted=batch)

        plot = add_effort_section(ledger, 3, report, "mkt-b", EditCosts())
        add_effort_section(ledger, 3, report, "mkt-b", EditCosts())  # written again: replaced, not duplicated
    finally:
        ledger.close()
    assert plot == report.parent / EFFORT_PLOT and plot.read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    assert text.startswith("# Project 3, round r0002") and text.count(SECTION) == 1
    assert "No annotation was counted yet" not in text
    # mkt-a: remove dog + add sofa = 2 edits against 2 true tags; mkt-b: add sofa = 1 edit.
    assert "| `mkt-a+11` | 30 | 2.00 | 2.00 | 1.00 | +0% |" in text
    assert "| `mkt-b+11` | 30 | 1.00 | 2.00 | 0.50 | +50% |" in text
    assert f"![edits per task against from scratch]({EFFORT_PLOT})" in text
    assert (report.parent / "effort.json").is_file()
