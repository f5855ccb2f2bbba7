"""`dagnn eval --bundle B --data D --plots DIR` on a small real bundle (no torch needed)."""
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")

from typer.testing import CliRunner  # noqa: E402

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401
from dagnn_cli.main import app  # noqa: E402
from plot_checks import assert_figures  # noqa: E402

BUNDLE_FIGURES = ["per_label_ap.png", "pr_curve.png", "map_at_k.png", "tsne_classifiers.png",
                  "tagging_confusion.png"]


def test_eval_bundle_writes_every_figure(bundle_dir, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle_dir), "--data", str(data_dir),
                                      "--plots", str(out), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["plots"]
    assert sorted(listed) == ["map_at_k", "per_label_ap", "pr_curve", "tagging_confusion", "tsne"]
    assert_figures(out, BUNDLE_FIGURES)
    assert not (out / "training.png").exists()  # a bundle has no training history


def test_blank_image_fails_the_check(tmp_path):
    """The check itself can fail: a single-colour PNG is refused."""
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(AssertionError, match="blank"):
        assert_figures(tmp_path, ["blank.png"])


def test_plots_into_a_file_path_is_a_clear_error(bundle_dir, data_dir, tmp_path):  # noqa: F811
    target = tmp_path / "a-file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle_dir), "--data", str(data_dir),
                                      "--plots", str(target), "--quiet"])
    assert result.exit_code == 1
    assert "--plots" in result.output and "a-file" in result.output
