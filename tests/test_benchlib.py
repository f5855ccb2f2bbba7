"""bench/benchlib.py: what a whole-process figure's header says about how dagnn is installed."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402


def test_install_kind_names_an_editable_install(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("__editable___dagnn")]:
        monkeypatch.delitem(sys.modules, name)
    assert benchlib.install_kind() == "regular install"
    monkeypatch.setitem(sys.modules, "__editable___dagnn_0_1_0_finder", object())
    assert benchlib.install_kind().startswith("editable install")
