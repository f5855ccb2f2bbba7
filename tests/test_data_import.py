"""`dagnn data import`: .mat files in the GNN4CMR and DCMH layouts become a data set folder (plus a feature
cache when they hold features) that `dagnn train` reads; checked row by row against the arrays written."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

scipy_io = pytest.importorskip("scipy.io")

import dagnn_cli.main  # noqa: E402,F401  (registers every command on the app)
from dagnn_cli.app import app  # noqa: E402
from dagnn_runtime.dataset import Dataset  # noqa: E402


def arrays(rng, n, dv=16, dt=12, c=5):
    labels = (rng.random((n, c)) < 0.4).astype(np.uint8)
    labels[:, 0] = 1 - labels[:, 1]  # every pair has a label
    bow = (rng.random((n, dt)) < 0.3).astype(np.float64)
    feats = (labels @ rng.normal(size=(c, dv)) + 0.1 * rng.normal(size=(n, dv))).astype(np.float32)
    return feats, bow, labels


def write_gnn4cmr(folder, rng, sizes=(60, 20)):
    folder.mkdir()
    written = {}
    for split, n in zip(("train", "test"), sizes):
        img, txt, lab = arrays(rng, n)
        for suffix, arr in (("img", img), ("txt", txt), ("lab", lab.T)):  # labels saved c×n, as MATLAB often does
            scipy_io.savemat(folder / f"{split}_{suffix}.mat", {f"{split}_{suffix}": arr})
        written[split] = (img, txt, lab)
    return written


def run(*args):
    result = CliRunner().invoke(app, ["data", "import", *map(str, args)])
    return result.exit_code, result.output


def test_gnn4cmr_features_become_a_data_set_and_feature_cache(tmp_path):
    from dagnn_export.features import load_features

    written = write_gnn4cmr(tmp_path / "src", np.random.default_rng(0))
    names = [f"concept{j}" for j in range(5)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    code, output = run(tmp_path / "src", "--format", "gnn4cmr", "--out", tmp_path / "ds",
                       "--labels", tmp_path / "labels.txt")
    assert code == 0, output
    assert "80 pairs" in output and "test split of 20 pairs" in output and "--features" in output
    ds = Dataset.load(tmp_path / "ds")
    assert ds.labels == names and len(ds.vocab) == 12 and len(ds) == 80
    img = np.concatenate([written["train"][0], written["test"][0]])
    txt = np.concatenate([written["train"][1], written["test"][1]])
    lab = np.concatenate([written["train"][2], written["test"][2]])
    np.testing.assert_array_equal(ds.bow(), txt)
    np.testing.assert_array_equal(ds.label_matrix(), lab)
    cache = load_features(tmp_path / "ds" / "features.npz")
    np.testing.assert_array_equal(cache.lookup([p.row for p in ds.pairs]), img)
    splits = ds.splits(seed=0)
    assert sorted(ds.pairs[i].row for i in splits.test) == list(range(60, 80))  # the files' test split kept
    assert ds.pairs[61].image == "test_img.mat#1"


def test_imported_features_train_a_run(tmp_path, torch):
    """The point of the import: the literature's feature files train with `dagnn train --features`."""
    write_gnn4cmr(tmp_path / "src", np.random.default_rng(1), sizes=(120, 30))
    assert run(tmp_path / "src", "--format", "gnn4cmr", "--out", tmp_path / "ds")[0] == 0
    result = CliRunner().invoke(app, [
        "train", "--data", str(tmp_path / "ds"), "--features", str(tmp_path / "ds" / "features.npz"),
        "--out", str(tmp_path / "run"), "--epochs", "2", "--no-progress", "--gnn-layers", "2",
        "--batch-size", "20", "--set", "common_dim=32", "--set", "text_hidden=32", "--set", "gv2_hidden=16",
        "--set", "gt2_hidden=16", "--set", "disc_hidden=16", "--set", "text_pretrain_epochs=2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n"] == 30 and 0 < metrics["avg"] <= 1


def test_dcmh_photos_become_png_files_with_the_same_pixels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    _, bow, labels = arrays(rng, 6)
    scipy_io.savemat(tmp_path / "flickr.mat", {"IAll": images.transpose(1, 2, 3, 0), "YAll": bow, "LAll": labels})
    code, output = run(tmp_path / "flickr.mat", "--format", "dcmh", "--out", tmp_path / "ds")
    assert code == 0, output
    assert "6 photos" in output and "features.npz" not in output
    ds = Dataset.load(tmp_path / "ds")
    assert not (tmp_path / "ds" / "features.npz").exists() and ds.split_file() is None
    for i in range(6):
        np.testing.assert_array_equal(np.asarray(Image.open(ds.image_path(i))), images[i])
    np.testing.assert_array_equal(ds.label_matrix(), labels)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(3)
    feats, bow, labels = arrays(rng, 8)
    scipy_io.savemat(tmp_path / "counts.mat", {"XAll": feats, "YAll": bow * 3, "LAll": labels})
    code, output = run(tmp_path / "counts.mat", "--format", "dcmh", "--out", tmp_path / "ds")
    assert code == 1 and "not a 0/1 bag of words" in output and not (tmp_path / "ds").exists()

    code, output = run(tmp_path / "counts.mat", "--format", "xmedia", "--out", tmp_path / "ds")
    assert code == 1 and "--format 'xmedia'" in output

    write_gnn4cmr(tmp_path / "src", rng)
    (tmp_path / "vocab.txt").write_text("sky\nsea\n")
    code, output = run(tmp_path / "src", "--format", "gnn4cmr", "--out", tmp_path / "ds", "--vocab",
                       tmp_path / "vocab.txt")
    assert code == 1 and "2 tag names, but the .mat files have 12" in output

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, output = run(tmp_path / "src", "--format", "gnn4cmr", "--out", tmp_path / "taken")
    assert code == 1 and "--force" in output and (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert run(tmp_path / "src", "--format", "gnn4cmr", "--out", tmp_path / "taken", "--force")[0] == 0
    assert not (tmp_path / "taken" / "keep.txt").exists() and len(Dataset.load(tmp_path / "taken")) == 80
    assert len(list(tmp_path.glob(".*tmp*"))) == 0  # no temporary folder left behind
