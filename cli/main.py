"""The complete ``dagnn`` command: the app and every command module, imported so that each registers its
commands. Torch-side modules are imported lazily inside the commands that need them."""
from __future__ import annotations

from dagnn_runtime.errors import InputError

from .app import app, main  # noqa: F401


def fail(message: str, code: int = 1) -> None:
    """transitional: removed when the torch-side commands move to cli.app (app.py prints the message)."""
    raise InputError(message)


from . import (demo_cmd, eval_cmd, export_cmd, features_cmd, index_cmds, search_cmds,  # noqa: E402,F401
               train_cmds)
