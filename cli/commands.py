"""Imports every command module so that each registers its commands on the shared app."""
from . import train_cmds, serve_cmds  # noqa: F401
