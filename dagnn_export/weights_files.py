"""Reading a backbone's weights file: a torch state_dict, loaded without pickles and checked against the
architecture, so that a wrong or damaged file is one clear error naming it."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError


def load_state_dict(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{what} weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise BackboneError(f"{what} weights file {path}: cannot read a state_dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{what} weights file {path}: expected a state_dict, got {type(state).__name__}")
    return state


def apply_state_dict(module: nn.Module, state: dict, what: str, path, ignore=()) -> None:
    """Load ``state`` strictly except for keys this backbone drops on purpose (e.g. the classifier head)."""
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore))}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(f"{what} weights file {path} does not match the architecture: "
                            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
