"""The complete ``dagnn`` command: the app and every command module, imported so that each registers its
commands. Torch-side modules are imported lazily inside the commands that need them."""
from __future__ import annotations

from .app import app, main  # noqa: F401
from . import (data_cmd, demo_cmd, embed_cmd, eval_cmd, export_cmd, features_cmd, index_cmds, info_cmd,  # noqa: E402,F401
               search_cmds, serve_cmd, train_cmds)
