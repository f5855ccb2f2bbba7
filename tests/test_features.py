import hashlib
import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def _photo(path, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)  # blocky colours survive JPEG
    Image.fromarray(base).resize((120, 80), Image.NEAREST).save(path, quality=90)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels.txt").write_text("sky\nwater\n")
    (root / "tag_vocab.txt").write_text("blue\nsea\n")
    pairs = []
    for row in range(6):
        _photo(root / "images" / f"im{row}.jpg", row)
        pairs.append({"row": 10 + row, "image": f"images/im{row}.jpg", "tags": ["blue"], "labels": ["sky"]})
    pairs.append({"row": 99, "image": None, "tags": ["sea"], "labels": ["water"]})
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return root


@pytest.fixture
def feats(torch):
    from dagnn_export import features

    torch.set_num_threads(2)
    return features


@pytest.fixture
def counted(feats, monkeypatch):
    """Counts the images that really go through the backbone."""
    calls = {"images": 0, "fail_after": None}
    real = feats._make_encoder

    def make(backbone, threads):
        encode = real(backbone, threads)

        def counting(pixels):
            if calls["fail_after"] is not None and calls["images"] >= calls["fail_after"]:
                raise RuntimeError("simulated interruption")
            calls["images"] += len(pixels)
            return encode(pixels)

        return counting

    monkeypatch.setattr(feats, "_make_encoder", make)
    return calls


def test_extract_matches_backbone_and_records_hashes(feats, dataset, tmp_path, torch):
    from dagnn_export.backbones import build_backbone
    from dagnn_runtime.preprocess import load_batch

    out = feats.extract_features(dataset, "tiny", tmp_path / "f.npz", batch_size=4, progress=False)
    cache = feats.load_features(out)
    assert cache.backbone == "tiny" and cache.image_size == 224 and cache.feature_dim == 64
    assert cache.rows.tolist() == [10, 11, 12, 13, 14, 15]  # the row without image has no features
    paths = [dataset / "images" / f"im{i}.jpg" for i in range(6)]
    assert cache.sha256.tolist() == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    with torch.inference_mode():
        expected = build_backbone("tiny")(torch.from_numpy(load_batch(paths))).numpy()
    np.testing.assert_allclose(cache.features, expected, atol=1e-5)
    np.testing.assert_array_equal(cache.lookup([13, 10]), cache.features[[3, 0]])
    with np.load(out, allow_pickle=False) as z:  # readable without pickles
        assert z["features"].dtype == np.float32 and z["rows"].dtype == np.int64


def test_rerun_reuses_unchanged_rows(feats, dataset, tmp_path, counted):
    out = tmp_path / "f.npz"
    feats.extract_features(dataset, "tiny", out, batch_size=4, progress=False)
    assert counted["images"] == 6
    first = feats.load_features(out)

    feats.extract_features(dataset, "tiny", out, batch_size=4, progress=False)
    assert counted["images"] == 6, "an unchanged data set must not be recomputed"

    _photo(dataset / "images" / "im2.jpg", seed=1234)
    feats.extract_features(dataset, "tiny", out, batch_size=4, progress=False)
    assert counted["images"] == 7, "only the changed image is recomputed"
    second = feats.load_features(out)
    keep = [10, 11, 13, 14, 15]
    np.testing.assert_array_equal(second.lookup(keep), first.lookup(keep))
    assert not np.allclose(second.lookup([12]), first.lookup([12]))


def test_other_weights_are_not_reused(feats, dataset, tmp_path, counted, torch):
    from dagnn_export.backbones import build_backbone

    out = tmp_path / "f.npz"
    feats.extract_features(dataset, "tiny", out, progress=False)
    weights = tmp_path / "tiny.pt"
    torch.save({k: v * 2 for k, v in build_backbone("tiny").body.state_dict().items()}, weights)
    feats.extract_features(dataset, "tiny", out, weights=weights, progress=False)
    assert counted["images"] == 12
    assert feats.load_features(out).weights == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_interrupted_run_resumes(feats, dataset, tmp_path, counted, monkeypatch):
    monkeypatch.setattr(feats, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "f.npz"
    counted["fail_after"] = 4
    with pytest.raises(RuntimeError, match="simulated"):
        feats.extract_features(dataset, "tiny", out, batch_size=2, progress=False)
    assert not out.exists(), "an interrupted run must not leave a cache that looks complete"
    assert (tmp_path / "f.npz.partial").is_file()

    counted["fail_after"] = None
    feats.extract_features(dataset, "tiny", out, batch_size=2, progress=False)
    assert counted["images"] == 6, "the second run computes only the 2 images the first did not finish"
    assert not (tmp_path / "f.npz.partial").exists()
    assert feats.load_features(out).rows.tolist() == [10, 11, 12, 13, 14, 15]


def test_corrupt_image_names_the_file(feats, dataset, tmp_path):
    (dataset / "images" / "im4.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(feats.FeatureError, match="im4.jpg"):
        feats.extract_features(dataset, "tiny", tmp_path / "f.npz", batch_size=2, progress=False)
    assert not (tmp_path / "f.npz").exists()


def test_missing_image_file_names_row_and_file(feats, dataset, tmp_path):
    (dataset / "images" / "im5.jpg").unlink()
    with pytest.raises(feats.FeatureError, match=r"row 15: .*im5.jpg"):
        feats.extract_features(dataset, "tiny", tmp_path / "f.npz", progress=False)


def test_lookup_names_missing_rows(feats, dataset, tmp_path):
    cache = feats.load_features(feats.extract_features(dataset, "tiny", tmp_path / "f.npz", progress=False))
    with pytest.raises(feats.FeatureError, match=r"2 rows.*\[99, 7\]"):
        cache.lookup([10, 99, 7])


def test_load_features_errors(feats, tmp_path):
    with pytest.raises(feats.FeatureError, match="nope.npz"):
        feats.load_features(tmp_path / "nope.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(feats.FeatureError, match="not a dagnn feature cache"):
        feats.load_features(other)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(feats.FeatureError, match="garbage.npz"):
        feats.load_features(garbage)


def test_cli_features(dataset, tmp_path, torch):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    out = tmp_path / "f.npz"
    runner = CliRunner()
    result = runner.invoke(app, ["features", "--data", str(dataset), "--backbone", "tiny", "--out", str(out),
                                 "--batch-size", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    from dagnn_export.features import load_features

    assert load_features(out).rows.tolist() == [10, 11, 12, 13, 14, 15]
    result = runner.invoke(app, ["features", "--data", str(tmp_path / "missing"), "--backbone", "tiny",
                                 "--out", str(out)])
    assert result.exit_code == 1 and "missing" in result.output
    result = runner.invoke(app, ["features", "--data", str(dataset), "--backbone", "resnet", "--out", str(out)])
    assert result.exit_code == 1 and "resnet" in result.output
