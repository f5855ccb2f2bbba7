"""Exporting a fused backbone (EfficientNet-Lite1 at 240 px beside tiny, resized in the graph) and the mirror
option (``--mirror``: the mean embedding of a photo and its mirror image), on real photos: parity with
torch, int8, the recorded cost, and ``dagnn info``."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")
ort = pytest.importorskip("onnxruntime")

import dagnn_runtime as dr  # noqa: E402
from dagnn_export.backbones import build_backbone  # noqa: E402
from dagnn_export.config import make_config  # noqa: E402
from dagnn_export.export import export_bundle  # noqa: E402
from dagnn_export.graph import correlation_matrices, propagation_matrix  # noqa: E402
from dagnn_export.model import build_model  # noqa: E402
from dagnn_export.onnx_graphs import ImageEncoder, macs_per_photo  # noqa: E402
from dagnn_runtime.dataset import Dataset  # noqa: E402
from dagnn_runtime.metrics import cross_modal_map  # noqa: E402
from dagnn_runtime.preprocess import load_batch  # noqa: E402
from test_export import DEMO, SMALL, make_dataset  # noqa: E402

FUSED = "tiny+efficientnet_lite1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    data = make_dataset(tmp_path_factory.mktemp("data") / "ds")
    dataset = Dataset.load(data)
    splits = dataset.splits(seed=0, val_fraction=0.25)
    cfg = make_config("mirflickr", "dagnn", **SMALL)
    cfg.data, cfg.backbone = str(data), FUSED
    graph = correlation_matrices(dataset.label_matrix(splits.train), cfg.resolved_tau(), cfg.p)
    torch.manual_seed(0)
    backbone = build_backbone(FUSED)
    model = build_model(cfg, backbone.feature_dim, len(dataset.vocab),
                        np.load(DEMO / "label_embeddings.npy", allow_pickle=False),
                        propagation_matrix(graph, cfg.gnn)).eval()
    with torch.no_grad():  # input statistics of the real features, as training sets them
        feats = backbone(torch.from_numpy(load_batch([dataset.image_path(i) for i in splits.train[:16]], 240)))
        model.image_mean.copy_(feats.mean(0))
        model.image_std.copy_(feats.std(0) + 1e-3)
    config = {**cfg.to_dict(), "feature_dim": backbone.feature_dim, "vocab_size": len(dataset.vocab),
              "num_labels": len(dataset.labels)}
    return dataset, splits, model, backbone, config


@pytest.fixture(scope="module")
def bundles(setup, tmp_path_factory):
    dataset, splits, model, backbone, config = setup
    out = tmp_path_factory.mktemp("export")
    export_bundle(model, backbone, config, dataset, splits, out / "plain")
    export_bundle(model, backbone, config, dataset, splits, out / "mirror", mirror=True)
    return out / "plain", out / "mirror"


def _raw(bundle, pixels):
    """The image graph's raw (not normalised) embeddings."""
    session = ort.InferenceSession(str(bundle / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"pixels": pixels})[0]


def _val_pixels(setup, n=4):
    dataset, splits = setup[0], setup[1]
    return load_batch([dataset.image_path(i) for i in splits.val[:n]], 240)


def test_fused_export_is_at_the_largest_side_and_matches_torch_on_real_photos(setup, bundles):
    _, _, model, backbone, _ = setup
    m = json.loads((bundles[0] / "manifest.json").read_text())
    assert m["preprocessing"]["size"] == 240 and m["model"]["backbone"] == FUSED
    assert all(0 <= v <= 1e-4 for v in m["parity"]["max_abs_diff"].values())
    image = m["graphs"]["image_encoder"]
    assert image["mirror"] is False
    assert image["cost"] == {"backbones": ["tiny", "efficientnet_lite1"], "input_side": 240,
                             "macs_per_photo": image["cost"]["macs_per_photo"], "passes": 1}
    assert 5e8 < image["cost"]["macs_per_photo"] < 7e8  # Lite1 at 240 px is about 0.6 GMAC, tiny far less
    pixels = _val_pixels(setup)
    with torch.no_grad():
        ref = model.image_common(backbone(torch.from_numpy(pixels))).numpy()
    np.testing.assert_allclose(_raw(bundles[0], pixels), ref, atol=1e-4)


def test_mirrored_embedding_is_the_mean_of_the_plain_graphs_for_the_photo_and_its_mirror(setup, bundles):
    plain, mirror = bundles
    pixels = _val_pixels(setup)
    flipped = np.ascontiguousarray(pixels[:, :, ::-1])
    expected = (_raw(plain, pixels) + _raw(plain, flipped)) / 2
    np.testing.assert_allclose(_raw(mirror, pixels), expected, atol=1e-5)
    np.testing.assert_allclose(_raw(mirror, flipped), _raw(mirror, pixels), atol=1e-5)
    loaded = dr.load(mirror, providers="cpu")
    np.testing.assert_allclose(loaded.encode_pixels(flipped), loaded.encode_pixels(pixels), atol=1e-6)


def test_mirrored_manifest_records_it_and_its_metrics_are_the_mirrored_graphs(setup, bundles):
    dataset, splits, model, backbone, _ = setup
    plain = json.loads((bundles[0] / "manifest.json").read_text())
    m = json.loads((bundles[1] / "manifest.json").read_text())
    image = m["graphs"]["image_encoder"]
    assert image["mirror"] is True and image["cost"]["passes"] == 2
    assert image["cost"]["macs_per_photo"] == 2 * plain["graphs"]["image_encoder"]["cost"]["macs_per_photo"]
    assert image["cost"]["macs_per_photo"] == macs_per_photo(ImageEncoder(backbone, model, torch.zeros(24, 32),
                                                                          mirror=True), 240)
    assert all(0 <= v <= 1e-4 for v in m["parity"]["max_abs_diff"].values())
    loaded = dr.load(bundles[1], providers="cpu")
    idx = splits.test
    measured = cross_modal_map(loaded.encode_images([dataset.image_path(i) for i in idx]),
                               loaded.encode_bow(dataset.bow(idx)), dataset.label_matrix(idx))
    assert m["metrics"]["test"] == pytest.approx(measured, abs=1e-5)
    card = " ".join((bundles[1] / "MODEL_CARD.md").read_text().split())
    assert "Mirror test-time augmentation" in card and "GMAC per photo (tiny + efficientnet_lite1 at 240 px)" in card
    assert "Mirror" not in (bundles[0] / "MODEL_CARD.md").read_text()


def test_int8_export_of_a_fused_backbone_with_mirror(setup, tmp_path):
    dataset, splits, model, backbone, config = setup
    out = tmp_path / "int8"
    export_bundle(model, backbone, config, dataset, splits, out, quantize="int8", calibration_size=8,
                  min_int8_cosine=0.9, mirror=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["precision"] == "int8" and m["graphs"]["image_encoder"]["mirror"] is True
    assert m["parity"]["int8_vs_fp32"]["image_embedding_cosine_mean"] >= 0.9
    pixels = _val_pixels(setup, 2)
    loaded = dr.load(out, providers="cpu")
    np.testing.assert_allclose(loaded.encode_pixels(np.ascontiguousarray(pixels[:, :, ::-1])),
                               loaded.encode_pixels(pixels), atol=1e-5)


def test_cli_export_mirror_and_info_state_the_cost(setup, bundles, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    runner = CliRunner()
    text = runner.invoke(app, ["info", "--bundle", str(bundles[1])])
    assert text.exit_code == 0, text.output
    macs = json.loads((bundles[1] / "manifest.json").read_text())["graphs"]["image_encoder"]["cost"]["macs_per_photo"]
    line = f"image encoder   tiny+efficientnet_lite1 at 240 px, {macs / 1e9:.2f} GMAC per photo (mirror: 2 passes)"
    assert line in text.output
    plain = runner.invoke(app, ["info", "--bundle", str(bundles[0]), "--json"])
    summary = json.loads(plain.output)
    assert summary["mirror"] is False and summary["image_encoder"]["passes"] == 1
    help_text = " ".join(runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--mirror" in help_text and "twice the image encoder's work" in help_text
    calls = []
    monkeypatch.setattr("dagnn_export.export.export_run", lambda run, out, **kw: calls.append(kw) or out)
    for extra in ([], ["--mirror"]):
        result = runner.invoke(app, ["export", "--run", str(tmp_path), "--out", str(tmp_path / "b"), *extra])
        assert result.exit_code == 0, result.output
    assert [kw["mirror"] for kw in calls] == [False, True]
