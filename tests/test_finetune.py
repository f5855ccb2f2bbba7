"""Fine-tuning the backbone's last blocks (``--finetune-backbone``) on cached trunk maps of real photos:
the trunk cache, what learns and what stays frozen, the starting point, and the export of the result."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")
pytest.importorskip("efficientnet_lite_pytorch", reason="needs the [train] extra (EfficientNet-Lite0)")

from test_export import DEMO, SMALL, make_dataset  # noqa: E402

from dagnn_export.backbone_split import build_head, split_backbone  # noqa: E402
from dagnn_export.backbones import build_backbone  # noqa: E402
from dagnn_export.config import make_config  # noqa: E402
from dagnn_export.errors import BackboneError, FeatureError  # noqa: E402
from dagnn_export.features import extract_features, load_features  # noqa: E402
from dagnn_export.train import train_run  # noqa: E402

DEPTH = 2  # trunk maps before the last 2 blocks: 192 x 7 x 7


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    torch.set_num_threads(2)
    data = make_dataset(tmp_path_factory.mktemp("ft") / "ds")
    pooled = extract_features(data, "efficientnet_lite0", data / "pooled.npz", progress=False)
    trunk = extract_features(data, "efficientnet_lite0", data / "trunk.npz", progress=False, trunk_blocks=DEPTH,
                             flip=True)
    return data, pooled, trunk


def test_trunk_cache_holds_maps_of_the_photos_and_their_mirrors(caches):
    data, pooled, trunk = caches
    cache, base = load_features(trunk), load_features(pooled)
    assert cache.trunk_blocks == DEPTH and cache.feature_dim == 192 * 7 * 7
    assert cache.flipped.shape == cache.features.shape
    assert np.abs(cache.flipped - cache.features).mean() > 0.1 * np.abs(cache.features).mean()
    # The head on the cached maps gives the pooled features: the cut loses nothing.
    cfg = {"backbone": "efficientnet_lite0", "image_size": 224, "trunk_blocks": DEPTH, "finetune_backbone": 0}
    with torch.no_grad():
        head = build_head(cfg, pretrained=True)(torch.from_numpy(cache.lookup(base.rows)))
    np.testing.assert_allclose(head.numpy(), base.features, atol=2e-4, rtol=1e-4)
    # Content-keyed: a rerun computes nothing; a pooled cache is never taken for trunk maps.
    lines = []
    extract_features(data, "efficientnet_lite0", trunk, log=lines.append, trunk_blocks=DEPTH, flip=True)
    assert ", 0 computed" in lines[-1]
    lines.clear()
    other = data / "pooled-then-trunk.npz"
    other.write_bytes(pooled.read_bytes())
    extract_features(data, "efficientnet_lite0", other, log=lines.append, trunk_blocks=DEPTH)
    assert f", {len(base.rows)} computed" in lines[-1]
    assert load_features(other).trunk_blocks == DEPTH and load_features(other).flipped is None


def _config(data, features, **extra):
    emb = str(DEMO / "label_embeddings.npy")
    return make_config("mirflickr", data=str(data), features=str(features), label_embeddings=emb,
                       batch_size=10, text_pretrain_epochs=2, num_threads=2, **SMALL, **{"epochs": 2, **extra})


@pytest.fixture(scope="module")
def run(caches, tmp_path_factory):
    """One command: phase 1 on the features the pretrained head gives, phase 2 trains the last block too."""
    data, _, trunk = caches
    out = tmp_path_factory.mktemp("runs") / "k1"
    train_run(_config(data, trunk, finetune_backbone=1, finetune_epochs=1), out, progress=False)
    return out


def test_finetuning_trains_only_the_last_blocks(caches):
    from dagnn_export.run import load_training_data
    from dagnn_export.train import fit

    data, _, trunk = caches
    cfg = _config(data, trunk, finetune_backbone=1, backbone_lr=1e-3)
    cfg.backbone, cfg.image_size, cfg.trunk_blocks = "efficientnet_lite0", 224, DEPTH
    model = fit(cfg, load_training_data(cfg), progress=False)["model"]
    start = build_head(cfg, pretrained=True).state_dict()
    state = model.image_head.state_dict()
    changed = {k for k, v in start.items() if not torch.equal(v, state[k])}
    assert changed, "the trainable blocks did not learn"
    assert all(k.startswith(("blocks.1.", "finish.")) for k in changed), sorted(changed)[:5]
    assert not any("running" in k for k in changed)  # batch norms keep their statistics


def test_finetuning_run_starts_from_its_frozen_phase(run):
    """Phase 2 starts from phase 1 (a complete run), and that starting point competes in the selection."""
    config = json.loads((run / "config.json").read_text())
    assert (config["trunk_blocks"], config["finetune_backbone"], config["feature_dim"]) == (DEPTH, 1, 192 * 49)
    phase1 = run / "frozen-phase"
    assert config["init_from"] == str(phase1) and config["epochs"] == 1
    assert json.loads((phase1 / "config.json").read_text())["feature_dim"] == 1280
    base = torch.load(phase1 / "model.pt", weights_only=True)
    state = torch.load(run / "model.pt", weights_only=True)
    assert torch.equal(base["text_mlp.fc1.weight"], state["text_mlp.fc1.weight"])  # frozen, from phase 1
    base_val = json.loads((phase1 / "metrics.json").read_text())["val"]["avg"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selected_epoch"] in (0, 1) and metrics["val"]["avg"] >= base_val - 1e-4
    if metrics["selected_epoch"] == 0:
        assert torch.equal(base["gv1.weight"], state["gv1.weight"])


def test_finetuned_run_exports_with_its_head(caches, run, tmp_path):
    """The bundle's image graph is the pretrained trunk, then the run's fine-tuned head and Gv1."""
    from dagnn_export.export import export_run
    from dagnn_export.run import load_run
    from dagnn_runtime import load
    from dagnn_runtime.preprocess import load_batch

    out = export_run(run, tmp_path / "bundle")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"]["image_embedding"] <= 1e-4
    model, _ = load_run(run)
    images = sorted((caches[0] / "images").iterdir())[:2]
    trunk = split_backbone(build_backbone("efficientnet_lite0"), DEPTH)[0]
    with torch.no_grad():
        expected = model.image_common(trunk(torch.from_numpy(load_batch(images)))).numpy()
    got = load(out).encode_images(images)
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-4)


def test_finetuning_needs_deep_enough_trunk_maps(caches, tmp_path):
    data, pooled, trunk = caches
    with pytest.raises(FeatureError, match="--trunk-blocks 3"):
        train_run(_config(data, trunk, finetune_backbone=3), tmp_path / "a", progress=False)
    with pytest.raises(BackboneError, match="vgg19"):
        split_backbone(build_backbone("vgg19", pretrained=False), 1)


def test_cli_refuses_finetuning_on_pooled_features(caches, tmp_path):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    data, pooled, _ = caches
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--features", str(pooled), "--out",
                                      str(tmp_path / "run"), "--preset", "mirflickr-finetune", "--no-progress"])
    assert result.exit_code != 0
    assert "--trunk-blocks 3" in result.output and "pooled features" in result.output
