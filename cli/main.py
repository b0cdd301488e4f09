"""The `assistant` command: one Typer app, one module per command group.

Heavy imports (torch, the model) happen inside the commands, so that `assistant --help` and the
light commands start in well under a second.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

from cli import agent as _agent
from cli import doctor as _doctor
from cli import effort as _effort
from cli import evaluate as _evaluate
from cli import models as _models
from cli import preannotate as _preannotate
from cli import review as _review
from cli import rounds as _rounds
from cli import select as _select
from cli import serve as _serve
from cli import simulate as _simulate
from cli import status as _status
from cli import tagging as _tagging
from cli import worker as _worker
from cli import world as _world
from cli import world_stats as _world_stats
from cli.boundary import error_boundary

__all__ = ["app", "main"]


def _plain_flags(command: Any) -> None:
    """Show flags as flags in ``--help``: no ``<bool>`` after ``--dry-run`` or ``--help``.

    Typer (0.29) prints every option's value type, flags included, so ``--dry-run <bool>`` reads
    as if it took a value. An empty metavar prints nothing; options that take a value keep theirs.
    """
    for param in getattr(command, "params", ()):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    # The help option is made on first use and then kept: make it now, with the command's own settings.
    context = command.context_class(command, **(command.context_settings or {}))
    help_option = command.get_help_option(context)
    if help_option is not None and help_option.metavar is None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


class _Group(TyperGroup):
    """The root group: every command under it shows its flags as flags (:func:`_plain_flags`) and
    runs inside the one error boundary."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self)

    def invoke(self, ctx: Any) -> Any:
        """Run the command inside the CLI's one error boundary (:mod:`cli.boundary`)."""
        with error_boundary():
            return super().invoke(ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The root's help, after Typer added its completion flags (they come after ``__init__``)."""
        _plain_flags(self)
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="assistant",
    cls=_Group,
    help="The labeling assistant: open-vocabulary pre-annotation, fine-tuning rounds and active learning "
    "for Label Studio.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """The labeling assistant."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# --- registration: one line per command or group (modules import their heavy dependencies lazily)
app.command("evaluate")(_evaluate.evaluate)
app.command("tag")(_tagging.tag)
app.command("demo")(_tagging.demo)
app.command("worker")(_worker.worker)
app.command("serve")(_serve.serve)
app.command("preannotate")(_preannotate.preannotate)
app.command("select")(_select.select)
app.command("review")(_review.review)
app.add_typer(_rounds.round_app, name="round")
app.command("beat")(_rounds.beat)
app.add_typer(_models.models_app, name="models")
app.add_typer(_simulate.simulate_app, name="simulate")
app.add_typer(_agent.agent_app, name="agent")
app.command("status")(_status.status)
app.command("doctor")(_doctor.doctor)
app.command("effort")(_effort.effort)
app.add_typer(_world.world_app, name="world")
_world.world_app.command("stats")(_world_stats.stats)
app.command("bench")(_world.bench)


def main() -> None:
    """Console entry point (`assistant`)."""
    app()
