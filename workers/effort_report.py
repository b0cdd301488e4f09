"""The effort ledger in each round report: edits per task against from scratch, by model version.

:func:`add_effort_section` writes, next to a round's ``report.md``, ``effort.png`` (edits per task
against labeling from scratch over the counted annotations, coloured by the model version that
served them: ``assistant.plots.plot_edits_over_time``) and ``effort.json`` (the figures of
``state.effort_summary.project_effort``), and appends a section to ``report.md`` (replaced,
never duplicated, when written again). Rounds call it after writing their report
(``workers.rounds``); ``assistant effort --plot`` draws the same figure on demand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from assistant.plots import plot_edits_over_time
from preannotation import EditCosts
from state.effort_summary import edits_series, project_effort
from state.ledger import Ledger

__all__ = ["EFFORT_PLOT", "SECTION", "add_effort_section"]

logger = logging.getLogger(__name__)

SECTION = "## Annotators' edits against labeling from scratch"
EFFORT_PLOT = "effort.png"
EFFORT_JSON = "effort.json"


def _row(name: str, f: dict[str, Any]) -> str:
    def num(key: str, fmt: str) -> str:
        value = f.get(key)
        return "-" if value is None else format(value, fmt)

    return (
        f"| {name} | {f['tasks']} | {num('edits_per_task', '.2f')} | {num('scratch_per_task', '.2f')} | "
        f"{num('ratio', '.2f')} | {num('saved_share', '+.0%')} | {num('precision', '.0%')} | "
        f"{num('recall', '.0%')} | {num('costlier_share', '.0%')} |"
    )


def _markdown(effort: dict[str, Any], plotted: bool) -> str:
    lines = [
        SECTION,
        "",
        "Every annotation compared with the prediction its annotator started from (the effort ledger, "
        "`assistant effort`). An edit is a wrong tag removed or a missing tag added; labeling from scratch "
        "takes one add per true tag. A ratio below 1 is work saved.",
        "",
        "| model version | tasks | edits / task | from scratch / task | ratio | saved | precision | recall | "
        "costlier tasks |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_row(f"`{v['model_version']}`", v) for v in effort["versions"]),
        _row("all", effort["totals"]),
        "",
    ]
    if plotted:
        lines += [f"![edits per task against from scratch]({EFFORT_PLOT})", ""]
    calibration = (effort.get("calibration") or {}).get("note")
    if calibration:
        lines += [f"Calibration: {calibration}.", ""]
    tripped = effort["guard"]["tripped"]
    if tripped:
        lines += ["Tags the guard stopped showing:", ""]
        lines += [f"- `{g['tag']}`: {g['reason']}" for g in tripped]
        lines.append("")
    return "\n".join(lines)


def add_effort_section(ledger: Ledger, project: int, report: Path, checkpoint: str, costs: EditCosts) -> Path | None:
    """Write the plot and figures next to ``report`` and append the section (module docstring).

    Args:
        ledger: The corrections ledger (its effort store).
        project: The project.
        report: The round's ``report.md``.
        checkpoint: The checkpoint serving the project after the round.
        costs: The project's edit costs.

    Returns:
        The plot, or None when no annotation was counted yet (the section then says so).
    """
    folder = report.parent
    effort = project_effort(ledger, project, checkpoint, costs)
    (folder / EFFORT_JSON).write_text(json.dumps(effort, indent=1, default=str) + "\n", encoding="utf-8")
    edits, scratch, versions = edits_series(ledger.effort, project)
    plot = None
    if edits:
        plot = plot_edits_over_time(
            edits, scratch, versions, folder / EFFORT_PLOT, title=f"Project {project}: edits per task"
        )
    text = _markdown(effort, plot is not None) if edits else f"{SECTION}\n\nNo annotation was counted yet.\n"
    if report.is_file():
        body = report.read_text(encoding="utf-8").split("\n" + SECTION, 1)[0].rstrip("\n")
        report.write_text(body + "\n\n" + text, encoding="utf-8")
    return plot
