import json

import numpy as np
import pytest

from conftest import run_backbone

pytestmark = pytest.mark.torch



def test_tiny_shapes_and_seeded(bb, torch):
    state = torch.random.get_rng_state()
    a, b = bb.build_backbone("tiny"), bb.build_backbone("tiny")
    assert torch.equal(state, torch.random.get_rng_state()), "building must not consume the global RNG"
    assert (a.name, a.feature_dim, a.image_size) == ("tiny", 64, 224)
    assert not a.training
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    fa, fb = run_backbone(a, pixels), run_backbone(b, pixels)
    assert fa.shape == (3, 64) and fa.dtype == np.float32 and np.isfinite(fa).all()
    np.testing.assert_array_equal(fa, fb)
    assert not np.allclose(fa[0], fa[1]), "different images should give different features"


@pytest.mark.parametrize("name", ["tiny", "efficientnet_lite0"])
def test_normalisation_inside_the_model(bb, torch, name):
    model = bb.build_backbone(name, pretrained=False)
    rgb = (200, 30, 120)
    pixels = np.empty((1, 224, 224, 3), dtype=np.uint8)
    pixels[...] = rgb
    mean, std = (bb.LITE_MEAN, bb.LITE_STD) if name == "efficientnet_lite0" else (bb.IMAGENET_MEAN, bb.IMAGENET_STD)
    manual = torch.empty(1, 3, 224, 224)
    for c in range(3):
        manual[:, c] = (rgb[c] / 255.0 - mean[c]) / std[c]
    with torch.inference_mode():
        expected = model.body(manual).flatten(1).numpy()
    np.testing.assert_allclose(run_backbone(model, pixels), expected, rtol=1e-4, atol=1e-5)


def test_rejects_float_or_nchw_input(bb, torch):
    model = bb.build_backbone("tiny")
    with pytest.raises(bb.BackboneError, match="uint8"):
        model(torch.zeros(1, 224, 224, 3))
    with pytest.raises(bb.BackboneError, match=r"\(1, 3, 224, 224\)"):
        model(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))


def test_tiny_onnx_parity_dynamic_batch(bb, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = bb.build_backbone("tiny")
    path = bb.export_onnx(model, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for n in (1, 5):  # exported with batch 2: other sizes prove the batch axis is dynamic
        pixels = np.random.default_rng(n).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
        out = session.run(["features"], {"pixels": pixels})[0]
        assert out.shape == (n, 64)
        np.testing.assert_allclose(out, run_backbone(model, pixels), atol=1e-5)


def test_efficientnet_lite0_on_real_photos(bb, mirflickr_dir):
    from dagnn_runtime.preprocess import load_batch

    records = [json.loads(line) for line in (mirflickr_dir / "pairs.jsonl").open()]
    paths = [mirflickr_dir / r["image"] for r in records if r["image"]][:2]
    model = bb.build_backbone("efficientnet_lite0")
    feats = run_backbone(model, load_batch(paths))
    assert feats.shape == (2, 1280) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert (feats >= 0).all() and (feats <= 6).all(), "pooled ReLU6 activations lie in [0, 6]"
    assert not np.allclose(feats[0], feats[1])


def test_pretrained_efficientnet_differs_from_random_init(bb):
    pixels = np.full((1, 224, 224, 3), 128, dtype=np.uint8)
    assert not np.allclose(run_backbone(bb.build_backbone("efficientnet_lite0"), pixels),
                           run_backbone(bb.build_backbone("efficientnet_lite0", pretrained=False), pixels))


def test_efficientnet_lite0_mid_is_the_full_networks_first_blocks_pooled(bb, torch):
    full, mid = bb.build_backbone("efficientnet_lite0"), bb.build_backbone("efficientnet_lite0_mid")
    pixels = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    net = full.body.net
    with torch.inference_mode():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() * full.scale + full.shift
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:bb.MID_BLOCKS]:
            x = block(x)
    assert (mid.feature_dim, mid.image_size, bb.MID_BLOCKS, len(net._blocks)) == (112, 224, 11, 16)
    np.testing.assert_allclose(run_backbone(mid, pixels), x.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_vgg19_fc7_features_and_offline_error(bb, torch, monkeypatch):
    model = bb.build_backbone("vgg19", pretrained=False)
    assert model.feature_dim == 4096
    out = run_backbone(model, np.zeros((1, 224, 224, 3), dtype=np.uint8))
    assert out.shape == (1, 4096) and (out >= 0).all(), "fc7 features come after the ReLU"

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(bb.BackboneError, match="--backbone-weights"):
        bb.build_backbone("vgg19", pretrained=True)


def test_local_weights_file(bb, torch, tmp_path):
    model = bb.build_backbone("tiny")
    state = {k: v + 1.0 for k, v in model.body.state_dict().items()}
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    loaded = bb.build_backbone("tiny", weights=path)
    assert torch.equal(loaded.body[0].weight, state["0.weight"])
    with pytest.raises(bb.BackboneError, match="does not match"):
        bb.build_backbone("efficientnet_lite0", weights=path)
    with pytest.raises(bb.BackboneError, match="missing.pt"):
        bb.build_backbone("tiny", weights=tmp_path / "missing.pt")


def test_unknown_name(bb):
    with pytest.raises(bb.BackboneError, match="resnet50"):
        bb.build_backbone("resnet50")
