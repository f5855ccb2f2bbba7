"""The ``dagnn`` typer app and the one place where a ``DagnnError`` becomes a one-line message.

Command modules register on ``app`` (or a sub-app) with ``from .app import app``; this module imports none
of them, so there is no import cycle. Library errors (``DagnnError``, the training side's included) print
``error: <message>`` on stderr and exit 1; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer
from typer.core import TyperGroup

from dagnn_runtime.errors import DagnnError, install_hint


class _Group(TyperGroup):
    """The root command group: a ``DagnnError`` from any command becomes ``error: …`` and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DagnnError as exc:
            if _debug(ctx):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc


def _debug(ctx) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or bool(os.environ.get("DAGNN_DEBUG"))


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  help="DAGNN cross-modal image-text retrieval: train, export, index, query, tag.")
index_app = typer.Typer(no_args_is_help=True, help="Build and maintain indexes of a bundle's embeddings.")
data_app = typer.Typer(no_args_is_help=True, help="Convert data sets into the dagnn data set folder format.")
app.add_typer(index_app, name="index")
app.add_typer(data_app, name="data")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    """Global options."""


def needs_train_extra(command: str) -> None:
    """Refuse a torch-side command clearly when the [train] extra is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise DagnnError(f"`dagnn {command}` needs the [train] extra ({exc}): {install_hint('train')}") from exc


HELP_WIDTH = 120  # wide enough for every option name and its type (dagnn train's are the longest)


def wide_help_when_piped(argv) -> None:
    """rich, which draws ``--help``, falls back to 80 columns when stdout is no terminal (``dagnn train --help
    | less``, a captured run) and then cuts long option names with "…". Help asked for there gets
    ``HELP_WIDTH`` columns unless COLUMNS says otherwise; a terminal keeps its own width, and other output
    (the demo's progress, tables) is left as it was."""
    args = sys.argv[1:] if argv is None else list(argv)
    groups = [[]] + [[group.name] for group in app.registered_groups]  # `dagnn`, `dagnn index`: help too
    asks_help = "--help" in args or args in groups
    if asks_help and not os.environ.get("COLUMNS") and not sys.stdout.isatty():
        os.environ["COLUMNS"] = str(HELP_WIDTH)


def main(argv=None) -> None:
    """Console entry point: registers every command (importing ``dagnn_cli.main``), then runs the app."""
    wide_help_when_piped(argv)
    importlib.import_module("dagnn_cli.main")
    try:
        app(args=argv, prog_name="dagnn")
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
