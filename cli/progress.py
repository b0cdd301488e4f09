"""Progress bars for the long commands (rounds, simulations): one home for their look."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["ProgressBars", "progress_bars"]

_PHASES = {
    "export": "Exporting annotations",
    "images": "Fetching images",
    "stage1": "Training stage 1 (image side)",
    "stage2": "Training stage 2 (prompt)",
    "evaluate": "Evaluating on held-out",
    "save": "Registering and reporting",
}


class ProgressBars:
    """A rich progress bar per phase of a round or a simulation, fed by ``progress(phase, done, total)``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(_PHASES.get(phase, phase), total=max(1, total))
        self.progress.update(self.tasks[phase], completed=done, total=max(1, total))


def progress_bars(console: Console, width: int = 32) -> Progress:
    """Rich progress bars: a description column ``width`` wide, the bar, done of total, and the time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    description = TextColumn(f"{{task.description:<{width}}}")
    return Progress(description, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
