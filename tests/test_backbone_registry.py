"""The backbone registry: EfficientNet-Lite1/2 from their weights packages at their own sides, fused
backbones (``a+b``) against their members computed here, one-line errors, the fine-tuning split of Lite1,
and the CLI's torch-free list of names."""
import numpy as np
import pytest

from conftest import run_backbone

pytestmark = pytest.mark.torch



def _pixels(n, side, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, side", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite_pretrained_from_its_package_at_its_own_side(bb, torch, name, side):
    pre, rand = bb.build_backbone(name), bb.build_backbone(name, pretrained=False)
    assert (pre.name, pre.feature_dim, pre.image_size) == (name, 1280, side)
    stem = "body.net._conv_stem.weight"
    assert not torch.equal(pre.state_dict()[stem], rand.state_dict()[stem])
    pixels = _pixels(2, side)
    feats = run_backbone(pre, pixels)
    assert feats.shape == (2, 1280) and np.isfinite(feats).all()
    assert (feats >= 0).all() and (feats <= 6).all(), "pooled ReLU6 activations lie in [0, 6]"
    assert not np.allclose(feats, run_backbone(rand, pixels))


def _normalised(bb, torch, x):
    """(x / 255 - mean) / std with the Lite statistics, written out here rather than taken from the class."""
    mean = torch.tensor(bb.LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bb.LITE_STD).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def test_fused_features_are_the_members_on_the_input_resized_to_their_sides(bb, torch):
    from torch.nn import functional as F

    fused = bb.build_backbone("efficientnet_lite1+efficientnet_lite0", pretrained=False)
    lite1, lite0 = fused.body
    assert (fused.name, fused.image_size, fused.feature_dim) == ("efficientnet_lite1+efficientnet_lite0", 240, 2560)
    pixels = _pixels(2, 240, seed=3)
    got = run_backbone(fused, pixels)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        small = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        ref0 = lite0.body(_normalised(bb, torch, small)).numpy()
        ref1 = lite1.body(_normalised(bb, torch, x)).numpy()
    np.testing.assert_allclose(got[:, :1280], ref1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, :1280], run_backbone(lite1, pixels), rtol=1e-5, atol=1e-6)  # full side: its own forward
    np.testing.assert_allclose(got[:, 1280:], ref0, rtol=1e-5, atol=1e-5)
    # and close to the member's own forward on the resized photo rounded to uint8 pixels
    rounded = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    own = run_backbone(lite0, rounded)
    cos = np.sum(own * got[:, 1280:], axis=1) / np.linalg.norm(own, axis=1) / np.linalg.norm(got[:, 1280:], axis=1)
    assert cos.min() > 0.999


def test_fused_onnx_export_matches_torch(bb, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fused = bb.build_backbone("tiny+efficientnet_lite0_mid", pretrained=False)
    path = bb.export_onnx(fused, tmp_path / "fused.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = _pixels(3, 224, seed=4)
    np.testing.assert_allclose(session.run(["features"], {"pixels": pixels})[0], run_backbone(fused, pixels), atol=1e-5)


@pytest.mark.parametrize("name, weights, says", [
    ("efficientnet_lite0+resnet50", None, "unknown backbone 'resnet50'"),
    ("tiny+tiny", None, "tiny+tiny names a backbone twice"),
    ("tiny+efficientnet_lite0_mid", "w.pt", "--backbone-weights names one file"),
])
def test_errors_are_one_line_naming_the_problem(bb, name, weights, says):
    with pytest.raises(bb.BackboneError) as caught:
        bb.build_backbone(name, weights=weights, pretrained=False)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_lite1_comes_apart_for_fine_tuning_like_lite0(bb, torch):
    from dagnn_export.backbone_split import split_backbone

    model = bb.build_backbone("efficientnet_lite1", pretrained=False)
    stem, blocks, finish = bb.backbone_parts(model)
    pixels = _pixels(1, 240, seed=5)
    with torch.inference_mode():
        x = stem(_normalised(bb, torch, torch.from_numpy(pixels).permute(0, 3, 1, 2).float()))
        for block in blocks:
            x = block(x)
        by_parts = finish(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(by_parts, run_backbone(model, pixels), rtol=1e-5, atol=1e-6)
    trunk, head = split_backbone(model, depth=3, trainable=1)
    with torch.inference_mode():
        split = head(trunk(torch.from_numpy(pixels))).numpy()
    np.testing.assert_allclose(split, by_parts, rtol=1e-5, atol=1e-6)
    assert trunk.image_size == 240 and len(blocks) > 16  # Lite1 is deeper than Lite0's 16 blocks


def test_the_cli_lists_the_registry_without_importing_it(bb):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app
    from dagnn_export.backbone_names import BACKBONES

    assert BACKBONES == tuple(bb.BUILDERS) == bb.BACKBONES
    result = CliRunner().invoke(app, ["features", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert all(name in text for name in BACKBONES) and "joined by '+'" in text


def test_presets_name_backbones_that_build_and_the_finetune_one_comes_apart(bb):
    from dagnn_export.config import PRESETS

    for name, preset in PRESETS.items():
        for member in (preset.get("backbone") or "efficientnet_lite0").split("+"):
            assert member in bb.BUILDERS, (name, member)
    finetune = bb.build_backbone(PRESETS["mirflickr-finetune"]["backbone"], pretrained=False)
    assert len(bb.backbone_parts(finetune)[1]) > PRESETS["mirflickr-finetune"]["finetune_backbone"]
