"""int8 kernels chosen on the CPU that serves: the export's requirement, this CPU's instructions, the
override, and bundles from before the requirement was recorded."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import dagnn_runtime as dr
from bundle_factory import bundle_parts, resign, write_bundle
from dagnn_runtime import int8_kernels

ENTRY = "session.x64quantprecision"


def _int8_bundle(tmp_path, name, *, kernels=None, session_config=None, reduce_range="none"):
    """The factory bundle whose manifest says its image graph is int8 (the graph itself stays fp32: what is
    checked here is the session the runtime builds for it)."""
    files, manifest = bundle_parts()
    graphs = json.loads(json.dumps(manifest["graphs"]))
    graphs["image_encoder"]["precision"] = "int8"
    if kernels is not None:
        graphs["image_encoder"]["int8_kernels"] = kernels
    if session_config is not None:
        graphs["image_encoder"]["session_config"] = session_config
    quantization = {"int8_config": {"chosen": "x", "quantizer": {"reduce_range": reduce_range}}}
    model = dict(manifest["model"], precision="int8")
    return write_bundle(tmp_path / name, files, resign(dict(manifest, graphs=graphs, quantization=quantization,
                                                            model=model)))


def _served_entry(path) -> str | None:
    model = dr.load(path, lazy=False)
    opts = model._sessions["image_encoder"].get_session_options()
    try:
        return opts.get_session_config_entry(ENTRY)
    except RuntimeError:  # onnxruntime: no such entry
        return None


def _cpu_has_vnni() -> bool:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return bool(re.search(r"\b(avx512_vnni|avx_vnni|amx_int8|asimddp)\b", text))


def test_this_cpus_instructions_are_read_from_the_system():
    found = int8_kernels.cpu_dot_product()
    assert (found is not None) == _cpu_has_vnni(), found


@pytest.mark.parametrize("forced, entry", [("exact", "1"), ("fast", None)])
def test_the_override_sets_either_kernel(tmp_path, monkeypatch, forced, entry):
    monkeypatch.setenv(int8_kernels.OVERRIDE_ENV, forced)
    path = _int8_bundle(tmp_path, forced, kernels="exact")
    assert _served_entry(path) == entry
    assert dr.load(path).encode_images([np.zeros((224, 224, 3), np.uint8)]).shape == (1, 16)


def test_an_exact_requirement_takes_fast_kernels_only_where_the_cpu_sums_exactly(tmp_path, monkeypatch):
    monkeypatch.delenv(int8_kernels.OVERRIDE_ENV, raising=False)
    path = _int8_bundle(tmp_path, "exact", kernels="exact")
    assert _served_entry(path) == (None if _cpu_has_vnni() else "1")
    _, why = int8_kernels.choose(json.loads((path / "manifest.json").read_text()), "image_encoder", "b")
    assert ("fast kernels (this CPU has" in why) == _cpu_has_vnni() and why


def test_bundles_from_before_the_requirement_keep_loading(tmp_path, monkeypatch):
    monkeypatch.delenv(int8_kernels.OVERRIDE_ENV, raising=False)
    vnni = _cpu_has_vnni()
    # exported where exact products were set by hand: the same requirement, chosen for this CPU
    assert _served_entry(_int8_bundle(tmp_path, "x64", session_config={ENTRY: "1"})) == (None if vnni else "1")
    assert _served_entry(_int8_bundle(tmp_path, "plain")) == (None if vnni else "1")       # 8-bit weights
    assert _served_entry(_int8_bundle(tmp_path, "7bit", reduce_range="matmul")) is None    # cannot saturate
    files, manifest = bundle_parts()
    assert _served_entry(write_bundle(tmp_path / "fp32", files, manifest)) is None         # not int8 at all


def test_a_wrong_requirement_or_override_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(dr.BundleError, match="int8_kernels' is 'sometimes'"):
        dr.load(_int8_bundle(tmp_path, "bad", kernels="sometimes"))  # refused when the manifest is read
    monkeypatch.setenv(int8_kernels.OVERRIDE_ENV, "turbo")
    with pytest.raises(dr.BundleError, match="use fast or exact"):
        dr.load(_int8_bundle(tmp_path, "ok", kernels="exact"), lazy=False)


def test_dagnn_info_says_which_kernels_and_why(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dagnn_cli.main import app

    path = _int8_bundle(tmp_path, "info", kernels="exact")
    monkeypatch.setenv(int8_kernels.OVERRIDE_ENV, "exact")
    out = CliRunner().invoke(app, ["info", "--bundle", str(path)])
    assert out.exit_code == 0, out.output
    assert "int8 (image graph served with exact kernels (DAGNN_INT8_KERNELS=exact))" in out.stdout
    monkeypatch.delenv(int8_kernels.OVERRIDE_ENV)
    shown = json.loads(CliRunner().invoke(app, ["info", "--bundle", str(path), "--json"]).stdout)["int8_kernels"]
    assert shown.startswith("fast kernels (this CPU has" if _cpu_has_vnni() else "exact products")
