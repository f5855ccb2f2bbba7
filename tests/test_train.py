"""End to end on a small real MIRFlickr subset: features → `dagnn train` → run dir → load_run / evaluate_run."""
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")

from dagnn_runtime.dataset import Dataset  # noqa: E402

N_IMAGES, N_TEXT_ONLY = 300, 300
SMALL = ["--epochs", "6", "--lr", "1e-3", "--gnn-layers", "2", "--batch-size", "50", "--set", "common_dim=256",
         "--set", "text_hidden=512", "--set", "gt2_hidden=256", "--set", "text_pretrain_epochs=8"]


@pytest.fixture(scope="module")
def subset(mirflickr_dir, tmp_path_factory):
    """The first 300 image pairs and 300 text-only pairs of the real data, with EfficientNet-Lite0 features."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs the [train] extra (EfficientNet-Lite0)")
    from dagnn_export.features import extract_features

    root = tmp_path_factory.mktemp("mirflickr-subset")
    for name in ("labels.txt", "tag_vocab.txt"):
        shutil.copy(mirflickr_dir / name, root / name)
    (root / "images").symlink_to(mirflickr_dir / "images", target_is_directory=True)
    lines, n_img, n_txt = [], 0, 0
    with open(mirflickr_dir / "pairs.jsonl", encoding="utf-8") as f:
        for line in f:
            has_image = json.loads(line)["image"] is not None
            if has_image and n_img < N_IMAGES:
                lines.append(line)
                n_img += 1
            elif not has_image and n_txt < N_TEXT_ONLY:
                lines.append(line)
                n_txt += 1
    (root / "pairs.jsonl").write_text("".join(lines), encoding="utf-8")
    feats = extract_features(root, "efficientnet_lite0", root / "feats.npz", progress=False)
    return root, feats


@pytest.fixture(scope="module")
def run(subset, shared_dir, tmp_path_factory):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    data, feats = subset
    out = tmp_path_factory.mktemp("run") / "run"
    emb = shared_dir / "data" / "label_embeddings" / "mirflickr-glove6B.npy"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--features", str(feats), "--out", str(out),
                                      "--label-embeddings", str(emb), "--seed", "1", "--no-progress", *SMALL])
    assert result.exit_code == 0, result.output
    assert "test mAP" in result.output
    return out


def random_ranking_map(labels: np.ndarray) -> float:
    """Expected AP of a random ranking ≈ the fraction of the database relevant to the query, averaged."""
    y = (labels > 0).astype(np.float64)
    return float((((y @ y.T) > 0).mean(1)).mean())


def test_run_directory_is_complete_and_resolved(run):
    from dagnn_export.run import RUN_FILES

    for name in RUN_FILES:
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["feature_dim"] == 1280 and cfg["vocab_size"] == 1386 and cfg["num_labels"] == 24
    assert cfg["backbone"] == "efficientnet_lite0" and cfg["image_size"] == 224
    assert cfg["tau"] == 0.3 and cfg["gnn"] == "gat" and cfg["gnn_layers"] == 2 and cfg["common_dim"] == 256
    assert (run / "labels.txt").read_text().split() == Dataset.load(cfg["data"]).labels


def test_short_training_beats_random_ranking(run):
    metrics = json.loads((run / "metrics.json").read_text())
    data = Dataset.load(json.loads((run / "config.json").read_text())["data"])
    test_rows = json.loads((run / "splits.json").read_text())["test"]
    baseline = random_ranking_map(data.label_matrix([data.row_index[r] for r in test_rows]))
    assert 0.4 < baseline < 0.8
    for key in ("i2t", "t2i", "avg"):
        assert metrics[key] > baseline + 0.04, (key, metrics[key], baseline)


def test_selection_uses_validation_only(run):
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    epochs = history["epochs"]
    assert 1 <= len(epochs) <= 6 and history["text_pretraining"]
    best = max(epochs, key=lambda e: e["val_avg"])
    assert metrics["selected_epoch"] == best["epoch"] == history["selected_epoch"]
    assert metrics["val"]["avg"] == pytest.approx(best["val_avg"])
    assert not any(k.startswith("test") for e in epochs for k in e)
    assert {"cla", "mdi", "adv", "total"} <= set(epochs[0])


def test_splits_and_label_graph_come_from_training(run):
    from dagnn_export.graph import correlation_matrices

    splits = json.loads((run / "splits.json").read_text())
    sets = {k: set(splits[k]) for k in ("train", "val", "test", "text_only")}
    assert len(sets["test"]) == N_IMAGES // 5 and len(sets["text_only"]) == N_TEXT_ONLY
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    graph = json.loads((run / "label_graph.json").read_text())
    data = Dataset.load(json.loads((run / "config.json").read_text())["data"])
    expected = correlation_matrices(data.label_matrix([data.row_index[r] for r in splits["train"]]), 0.3, 0.5)
    for key in ("P", "B", "A"):
        np.testing.assert_allclose(np.array(graph[key]), expected[key], rtol=1e-6)


def test_checkpoint_round_trip_and_evaluate_run(run, subset):
    from dagnn_export.evaluate import evaluate_run
    from dagnn_export.features import load_features
    from dagnn_export.run import load_run

    model, cfg = load_run(run)
    assert not model.training and cfg["variant"] == "dagnn"
    state = torch.load(run / "model.pt", weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    metrics = json.loads((run / "metrics.json").read_text())
    result = evaluate_run(run, "test", k=20)
    for key in ("i2t", "t2i", "avg"):
        assert result[key] == pytest.approx(metrics[key], abs=1e-6)
    assert set(result["map_at_k"]) >= {"k", "i2t", "t2i", "avg"} and result["map_at_k"]["k"] == 20
    assert {"mean_ap", "CF1", "OF1", "thresholds"} <= set(result["tagging"])
    assert len(result["tagging"]["thresholds"]) == 24
    # The restored model embeds a test image exactly as during evaluation (deterministic, eval mode).
    data, feats = subset
    row = json.loads((run / "splits.json").read_text())["test"][0]
    h_v = torch.from_numpy(load_features(feats).lookup([row]))
    with torch.no_grad():
        v1, v2 = model.image_common(h_v), load_run(run)[0].image_common(h_v)
    torch.testing.assert_close(v1, v2)


def test_eval_run_plots_writes_every_figure(run, tmp_path):
    pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
    pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app
    from plot_checks import assert_figures

    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--plots", str(out), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["plots"]
    assert sorted(listed) == ["map_at_k", "per_label_ap", "pr_curve", "tagging_confusion", "training", "tsne"]
    assert_figures(out, ["per_label_ap.png", "pr_curve.png", "map_at_k.png", "tsne_classifiers.png",
                         "training.png", "tagging_confusion.png"])


def test_load_run_names_what_is_missing(run, tmp_path):
    from dagnn_export.evaluate import evaluate_run
    from dagnn_export.run import RunError, load_run

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.pt").unlink()
    with pytest.raises(RunError, match="model.pt"):
        load_run(broken)
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split"):
        evaluate_run(run, "holdout")


def test_cli_rejects_bad_input(subset, tmp_path):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    data, feats = subset
    runner = CliRunner()
    base = ["train", "--data", str(data), "--out", str(tmp_path / "r")]
    cases = [(["--features", str(feats), "--variant", "dagnn-9"], "unknown variant"),
             (["--features", str(tmp_path / "none.npz")], "does not exist"),
             (["--features", str(feats), "--set", "dropuot=0.1"], "unknown config key"),
             (["--features", str(feats), "--gnn", "gin"], "gnn")]
    for extra, message in cases:
        result = runner.invoke(app, base + extra)
        assert result.exit_code != 0 and message in result.output, (extra, result.output)


def test_reusing_a_pretrained_text_mlp(run, subset, tmp_path):
    """--set text_mlp_init=RUN starts from that run's text MLP and skips pretraining (used by the ablation)."""
    from dagnn_export.config import make_config
    from dagnn_export.run import RunError, load_run
    from dagnn_export.train import train_run

    data, feats = subset
    cfg = make_config(data=str(data), features=str(feats), seed=1, text_mlp_init=str(run), epochs=1,
                      gnn_layers=1, common_dim=64, text_hidden=512, gt2_hidden=64, batch_size=50, lr=1e-3,
                      text_only_in_training=True)
    metrics = train_run(cfg, tmp_path / "reuse", progress=False, log=lambda *_: None)
    assert metrics["epochs_run"] == 1
    history = json.loads((tmp_path / "reuse" / "history.json").read_text())
    assert history["text_pretraining"] == []
    assert history["epochs"][0]["cla_text_only"] > 0  # the text-only pairs took part in joint training
    source, reused = load_run(run)[0], load_run(tmp_path / "reuse")[0]
    for key, value in source.text_mlp.state_dict().items():
        torch.testing.assert_close(reused.text_mlp.state_dict()[key], value)  # frozen: unchanged by training
    cfg.text_mlp_init, cfg.text_hidden = str(run), 128
    with pytest.raises(RunError, match="text MLP"):
        train_run(cfg, tmp_path / "bad", progress=False, log=lambda *_: None)


def test_scarce_label_regime_keeps_validation_and_test():
    from dagnn_export.config import make_config
    from dagnn_export.run import fewer_training_pairs
    from dagnn_runtime.dataset import Splits
    from dagnn_runtime.errors import InputError

    splits = Splits(np.arange(100), np.arange(100, 120), np.arange(120, 150), np.arange(150, 250))
    few = fewer_training_pairs(splits, 0.1, seed=0)
    assert len(few.train) == 10 and len(few.text_only) == 10
    assert set(few.train) <= set(splits.train) and set(few.text_only) <= set(splits.text_only)
    assert few.val is splits.val and few.test is splits.test
    assert np.array_equal(few.train, fewer_training_pairs(splits, 0.1, seed=0).train)
    assert not np.array_equal(few.train, fewer_training_pairs(splits, 0.1, seed=1).train)
    with pytest.raises(InputError, match="train_fraction"):
        make_config(train_fraction=0)
