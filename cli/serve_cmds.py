"""Commands registered on the shared app (being written)."""
from .main import app, fail  # noqa: F401
