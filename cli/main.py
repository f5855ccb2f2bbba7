"""The ``dagnn`` command: one typer app. Torch-side modules are imported lazily inside the commands that
need them, so the serving commands work with the base (torch-free) install."""
from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="DAGNN cross-modal image-text retrieval: train, export, index, query, tag.")
index_app = typer.Typer(no_args_is_help=True, help="Build and maintain HNSW indexes of a bundle's embeddings.")
app.add_typer(index_app, name="index")

_DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _DEBUG["on"] = debug or bool(os.environ.get("DAGNN_DEBUG"))


def fail(message: str, code: int = 1) -> None:
    """Print one clear line on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Console entry point: user-facing errors become one line on stderr unless --debug is given."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)  # without standalone mode, click returns typer.Exit's code instead of raising
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, EOFError):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the whole point is one readable line
        try:
            from click import ClickException
            from click.exceptions import Abort
        except ImportError:  # newer typer releases ship their own copy of click
            from typer import Abort
            from typer._click.exceptions import ClickException

        if isinstance(exc, Abort):
            sys.exit(1)
        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _DEBUG["on"] or "--debug" in sys.argv:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


from . import commands  # noqa: E402,F401  (registers every command on ``app``)
