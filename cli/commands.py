"""Imports every command module so that each registers its commands on the shared app."""
from . import features_cmd, train_cmds, export_cmd, serve_cmds, demo_cmd, info_cmd  # noqa: F401
