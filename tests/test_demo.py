"""`dagnn demo` end to end on a tiny plan (tiny backbone, small model, 1 epoch): every stage runs through
the real features/train/export/runtime code, the outputs are where the printed commands say, and the
printed `dagnn query` command works when pasted. The real-size run is `dagnn demo [--quick]` (CI)."""
import json
import shlex
import sqlite3
import subprocess
from dataclasses import replace

import pytest

from dagnn_runtime import open_index

pytestmark = pytest.mark.torch

TINY_MODEL = {"epochs": 1, "text_pretrain_epochs": 1, "batch_size": 40, "common_dim": 64, "text_hidden": 128,
              "gv2_hidden": 32, "gt2_hidden": 64, "disc_hidden": 32, "gnn_layers": 2}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, torch):
    from rich.console import Console

    from dagnn_export.demo import Plan, run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    plan = Plan("test", photos=120, text_only=100, train=TINY_MODEL, min_margin=None, backbone="tiny")
    console = Console(record=True, width=200, force_terminal=False)
    summary = run_demo(out, console=console, plan=plan)
    return out, summary, console.export_text(), plan


def test_demo_writes_every_stage_output(demo_run):
    out, summary, text, _ = demo_run
    assert list(summary["stages"]) == ["data", "features", "training", "export", "indexes", "queries",
                                       "metrics", "report"]
    assert all(s >= 0 for s in summary["stages"].values())
    for name in ("run/model.pt", "run/history.json", "bundle/manifest.json", "index/image/index.db",
                 "index/text/index.db", "report.html", "demo.json", "features-tiny.npz"):
        assert (out / name).is_file(), name
    assert json.loads((out / "demo.json").read_text())["test_map"] == summary["test_map"]
    index = open_index(out / "index/image")
    assert len(index) == 120
    # the photos it indexed lie in the output folder and are stored relative to the index: the folder moves
    stored = sqlite3.connect(out / "index/image/index.db").execute("SELECT metadata FROM items").fetchall()
    assert all(json.loads(m)["path"].startswith("../../data/") for (m,) in stored)
    assert all(index.metadata(i)["path"].startswith(str(out / "data")) for i in index.ids)
    index.close()
    for key in ("i2t", "t2i", "avg"):
        assert 0 < summary["test_map"][key] <= 1 and 0 < summary["random_map"][key] <= 1
    # the terminal shows the example tables, the metrics and the timing of each stage
    for expected in ("Image2Text", "Image→Image", "Text2Image", "Tagging", "Test mAP", "random ranking",
                     "Time per stage", "dagnn query --bundle"):
        assert expected in text, expected


def test_printed_query_command_works_when_pasted(demo_run):
    """The printed command runs as printed, in a shell whose PATH need not hold this install's ``dagnn``."""
    out, summary, text, _ = demo_run
    line = next(l.strip() for l in text.splitlines() if " query --bundle" in l and "--image" in l)
    assert line == summary["query_command"]
    result = subprocess.run(shlex.split(line) + ["--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout[result.stdout.index("{"):])["results"]
    assert len(hits) == 5 and all(h["metadata"]["tags"] for h in hits)  # Image2Text: tag texts come back


def test_demo_report_links_resolve(demo_run):
    import re

    out = demo_run[0]
    page = (out / "report.html").read_text(encoding="utf-8")
    links = re.findall(r'src="([^"]+)"', page)
    assert links and all((out / link).is_file() for link in links)
    assert "<svg" in page and "<h2>Timing</h2>" in page and "polyline" in page


def test_rerun_replaces_outputs_and_fails_loudly_below_random(demo_run, torch):
    """A second run in the same folder replaces the bundle and indexes; a margin no model can reach makes
    the demo fail with a DemoError naming the mAPs instead of printing success."""
    from rich.console import Console

    from dagnn_export.demo import DemoError, run_demo

    out, _, _, plan = demo_run
    console = Console(record=True, width=200, force_terminal=False)
    with pytest.raises(DemoError, match=r"does not beat random ranking.*avg"):
        run_demo(out, console=console, plan=replace(plan, min_margin=1.0))
    assert "beats random ranking" not in console.export_text()
    space = json.loads((out / "bundle/manifest.json").read_text())["embedding_space"]
    for modality in ("image", "text"):
        assert open_index(out / "index" / modality).embedding_space == space


def test_demo_command_refuses_an_out_path_that_is_a_file(tmp_path):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    target = tmp_path / "taken"
    target.write_text("x")
    result = CliRunner().invoke(app, ["demo", "--out", str(target)])
    assert result.exit_code == 1 and "is not a folder" in result.output


def test_demo_report_shows_the_figures(demo_run):
    pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
    pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")
    from plot_checks import assert_figures

    out, *_ = demo_run
    page = (out / "report.html").read_text(encoding="utf-8")
    for name in ("per_label_ap.png", "tsne_classifiers.png"):
        assert f'src="report_files/{name}"' in page
    assert_figures(out / "report_files", ["per_label_ap.png", "tsne_classifiers.png"])
