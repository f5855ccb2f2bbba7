"""Every error the torch side raises on purpose is a DagnnError (the CLI shows it as one line), keeps the
ValueError / RuntimeError base callers caught before, and is importable where it used to be."""
import subprocess
import sys

import pytest

from dagnn_runtime.errors import DagnnError, InputError


def test_each_training_error_is_a_dagnn_error():
    from dagnn_export import errors

    expected = {"RunError": ValueError, "FeatureError": ValueError, "BackboneError": ValueError,
                "DataError": ValueError, "ExportError": RuntimeError, "DemoError": RuntimeError}
    for name, old_base in expected.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TrainingError) and issubclass(cls, DagnnError), name
        assert issubclass(cls, old_base), name
    assert issubclass(errors.TrainingError, DagnnError) and not issubclass(errors.TrainingError, InputError)


def test_errors_stay_importable_from_their_old_modules(torch):
    from dagnn_export import backbones, data, errors, export, features, train
    from dagnn_export.demo import DemoError

    assert backbones.BackboneError is errors.BackboneError and features.FeatureError is errors.FeatureError
    assert data.DataError is errors.DataError and export.ExportError is errors.ExportError
    assert train.RunError is errors.RunError and DemoError is errors.DemoError


def test_bad_config_values_are_input_errors():
    from dagnn_export.config import TrainConfig, default_values, make_config, parse_override

    with pytest.raises(InputError, match="unknown variant"):
        make_config(variant="dagnn-9")
    with pytest.raises(InputError, match="--set lr: expected a number, got 'fast'"):
        parse_override(default_values(), "lr=fast")
    # run directories written while the config still had a free-form "extra" field load unchanged
    old = dict(TrainConfig().to_dict(), extra={})
    assert TrainConfig.from_dict(old) == TrainConfig()


def test_torch_side_imports_no_cli_module(torch):
    """dagnn_export sits below dagnn_cli: importing any of its modules must not pull the CLI in."""
    code = ("import sys, pkgutil, importlib, dagnn_export\n"
            "for m in pkgutil.walk_packages(dagnn_export.__path__, 'dagnn_export.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'dagnn_cli')\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_torch_side_source_imports_the_cli():
    """Also the imports hidden inside functions (the import test above cannot see those)."""
    import ast
    from pathlib import Path

    import dagnn_export

    offenders = []
    for path in Path(dagnn_export.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "dagnn_cli"]
    assert not offenders
