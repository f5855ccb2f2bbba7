"""Opening bundles: folder and archive, verification before use, format and dimension checks."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import dagnn_runtime as dr
from dagnn_runtime import bundle_io, digests
from bundle_factory import (bundle_dir, build_bundle, bundle_parts, image_encoder, npy_bytes, resign,  # noqa: F401
                            seal, text_encoder, write_bundle)


def test_import_does_not_pull_torch():
    code = "import sys, dagnn_runtime, dagnn_runtime.engine, dagnn_runtime.indexes.hnsw, dagnn_runtime.ingest, dagnn_runtime.evaluation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_onnxruntime_is_imported_when_a_bundle_loads(bundle_dir):
    """Not by the modules: Searcher.open opens the indexes in a second thread while that import runs."""
    code = ("import sys, dagnn_runtime as dr, dagnn_runtime.engine, dagnn_runtime.session, dagnn_runtime.execution; "
            "before = 'onnxruntime' in sys.modules; "
            f"dr.load({str(bundle_dir)!r}); print(before, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_folder_and_archive_load_the_same_model(tmp_path, bundle_dir):
    archive = build_bundle(tmp_path / "b.dagnn", archive=True)
    a, b = dr.load(bundle_dir), dr.load(archive)
    assert a.embedding_space == b.embedding_space
    assert a.labels == b.labels and a.vocab == b.vocab
    texts = ["sky, clouds", ["dog", "cat"]]
    np.testing.assert_array_equal(a.encode_texts(texts), b.encode_texts(texts))
    assert a.manifest["format"] == "dagnn-bundle"


def test_archive_of_a_bundle_folder_loads(tmp_path, bundle_dir):
    """Zipping the folder itself (members under one top-level folder) is accepted too."""
    archive = tmp_path / "nested.dagnn"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(bundle_dir.iterdir()):
            zf.write(f, f"mybundle/{f.name}")
    assert dr.load(archive).embedding_space == dr.load(bundle_dir).embedding_space


def test_embedding_space_is_the_documented_digest(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    subset = {k: manifest["files"][k] for k in ("image_encoder.onnx", "text_encoder.onnx", "classifiers.npy")}
    expected = digests.sha256_hex(json.dumps(subset, sort_keys=True, separators=(",", ":")).encode())
    assert dr.load(bundle_dir).embedding_space == expected == manifest["embedding_space"]


@pytest.mark.parametrize("name", ["image_encoder.onnx", "text_encoder.onnx", "classifiers.npy", "vocab.txt",
                                  "MODEL_CARD.md"])
def test_a_changed_byte_is_refused_naming_the_file(tmp_path, name):
    files, manifest = bundle_parts()
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    files[name] = bytes(data)
    for archive in (False, True):
        path = write_bundle(tmp_path / ("t.dagnn" if archive else "t"), files, manifest, archive=archive)
        with pytest.raises(dr.BundleError, match=rf"{name}.*SHA-256"):
            dr.load(path, lazy=False)


def test_a_lazy_load_verifies_each_graph_at_its_first_use(tmp_path):
    """A text query never reads the image graph; a changed graph is refused when its encoder is first used."""
    files, manifest = bundle_parts()
    data = bytearray(files["image_encoder.onnx"])
    data[len(data) // 2] ^= 0x01
    files["image_encoder.onnx"] = bytes(data)
    for archive in (False, True):
        m = dr.load(write_bundle(tmp_path / ("l.dagnn" if archive else "l"), files, manifest, archive=archive))
        assert m.encode_texts(["sky, clouds"]).shape == (1, 16)
        assert not any("image" in key for key in m._sessions)  # the image graph was never read
        with pytest.raises(dr.BundleError, match="image_encoder.onnx.*SHA-256"):
            m.encode_images(np.full((30, 30, 3), 128, np.uint8))


def test_a_graph_changed_after_loading_is_refused(tmp_path, bundle_dir):
    import shutil

    path = shutil.copytree(bundle_dir, tmp_path / "b")
    m = dr.load(path)
    (path / "text_encoder.onnx").write_bytes((path / "text_encoder.onnx").read_bytes() + b"\0")
    with pytest.raises(dr.BundleError, match="text_encoder.onnx.*SHA-256"):
        m.encode_texts(["sky"])


@pytest.mark.parametrize("archive", [False, True])
def test_a_missing_file_is_refused_naming_it(tmp_path, archive):
    files, manifest = bundle_parts()
    del files["classifiers.npy"]
    path = write_bundle(tmp_path / ("m.dagnn" if archive else "m"), files, manifest, archive=archive)
    with pytest.raises(dr.BundleError, match="missing file 'classifiers.npy'"):
        dr.load(path)


def test_missing_manifest_and_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(dr.BundleError, match="missing manifest.json"):
        dr.load(tmp_path / "empty")
    with pytest.raises(dr.BundleError, match="no such file"):
        dr.load(tmp_path / "nowhere")
    (tmp_path / "junk.dagnn").write_bytes(b"not a zip")
    with pytest.raises(dr.BundleError, match="not a readable zip"):
        dr.load(tmp_path / "junk.dagnn")


@pytest.mark.parametrize("key,value,message", [
    ("format_version", 4, "format_version 4 is not supported"),
    ("format", "other", "format 'other'"),
])
def test_unknown_format_is_refused(tmp_path, key, value, message):
    files, manifest = bundle_parts()
    manifest[key] = value
    with pytest.raises(dr.BundleError, match=message):
        dr.load(write_bundle(tmp_path / "f", files, manifest))


def test_manifest_that_is_not_json(tmp_path, bundle_dir):
    files, manifest = bundle_parts()
    path = write_bundle(tmp_path / "j", files, manifest)
    (path / "manifest.json").write_text("{broken")
    with pytest.raises(dr.BundleError, match="manifest.json: not valid JSON"):
        dr.load(path)


def test_wrong_embedding_space_is_refused(tmp_path):
    files, manifest = bundle_parts()
    manifest = resign(dict(manifest, embedding_space="0" * 64))
    with pytest.raises(dr.BundleError, match="'embedding_space' does not match the digests"):
        dr.load(write_bundle(tmp_path / "e", files, manifest))


def test_dimension_mismatches_are_refused(tmp_path):
    files, manifest = bundle_parts()
    # one label more than Z has rows
    bad = dict(manifest, labels=manifest["labels"] + ["extra"])
    with pytest.raises(dr.BundleError, match="classifiers.npy.*shape"):
        dr.load(write_bundle(tmp_path / "a", files, bad))
    # vocabulary size
    bad = resign(dict(manifest, vocabulary={"file": "vocab.txt", "size": 999}))
    with pytest.raises(dr.BundleError, match="vocab.txt.*999"):
        dr.load(write_bundle(tmp_path / "b", files, bad))
    # thresholds count
    bad = dict(manifest, thresholds={"values": [0.1]})
    with pytest.raises(dr.BundleError, match="1 thresholds for 6 labels"):
        dr.load(write_bundle(tmp_path / "c", files, bad))


def test_graph_inputs_and_outputs_are_checked_against_the_manifest(tmp_path):
    files, manifest = bundle_parts()
    graphs = json.loads(json.dumps(manifest["graphs"]))
    graphs["image_encoder"]["input"] = "image"
    with pytest.raises(dr.BundleError, match="image_encoder.onnx' has inputs \\['pixels'\\]"):
        dr.load(write_bundle(tmp_path / "a", files, resign(dict(manifest, graphs=graphs))), lazy=False)

    # a text graph producing 8-d embeddings in a 16-d bundle
    rng = np.random.default_rng(1)
    z = np.load(__import__("io").BytesIO(files["classifiers.npy"]))
    files2 = dict(files, **{"text_encoder.onnx": text_encoder(rng.standard_normal((20, 8)), z[:, :8])})
    with pytest.raises(dr.BundleError, match="text_encoder.onnx' output 'embedding' has shape"):
        dr.load(write_bundle(tmp_path / "b", files2, seal(manifest, files2)), lazy=False)

    # an image graph for 64-px input in a bundle declaring 224-px preprocessing
    files3 = dict(files, **{"image_encoder.onnx": image_encoder(rng.standard_normal((3, 4)),
                                                                 rng.standard_normal((4, 16)), z, 64)})
    with pytest.raises(dr.BundleError, match="input 'pixels' is tensor\\(uint8\\) \\[.*64"):
        dr.load(write_bundle(tmp_path / "c", files3, seal(manifest, files3)), lazy=False)


def test_a_graph_onnxruntime_cannot_read_is_refused(tmp_path):
    files, manifest = bundle_parts()
    files["text_encoder.onnx"] = b"\x08\x07 this is not a protobuf model"
    with pytest.raises(dr.BundleError, match="onnxruntime cannot load 'text_encoder.onnx'"):
        dr.load(write_bundle(tmp_path / "g", files, seal(manifest, files)), lazy=False)


def test_bad_member_names_are_refused(tmp_path):
    files, manifest = bundle_parts()
    path = write_bundle(tmp_path / "evil.dagnn", files, manifest, archive=True)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(dr.BundleError, match="escape the archive"):
        dr.load(path)
    bad = dict(manifest, files=dict(manifest["files"], **{"../../etc/passwd": "0" * 64}))
    with pytest.raises(dr.BundleError, match="not a plain file name"):
        dr.load(write_bundle(tmp_path / "n", files, bad))


def test_oversized_member_is_refused(tmp_path, monkeypatch):
    files, manifest = bundle_parts()
    path = write_bundle(tmp_path / "big.dagnn", files, manifest, archive=True)
    monkeypatch.setattr(bundle_io, "MAX_GRAPH_BYTES", 1000)
    with pytest.raises(dr.BundleError, match="image_encoder.onnx.*limit"):
        dr.load(path)


def test_providers_and_threads(bundle_dir):
    assert dr.load(bundle_dir, providers="auto").providers[-1] == "CPUExecutionProvider"
    m = dr.load(bundle_dir, providers=["CPUExecutionProvider"], threads=1)
    assert m.providers == ["CPUExecutionProvider"]
    with pytest.raises(dr.InputError, match="NoSuchExecutionProvider.*available"):
        dr.load(bundle_dir, providers=["NoSuchExecutionProvider"])


def test_null_threshold_means_never_predicted(tmp_path):
    files, manifest = bundle_parts(thresholds=[None, -1.0, -1.0, -1.0, -1.0, -1.0])
    m = dr.load(write_bundle(tmp_path / "t", files, manifest))
    assert np.isinf(m.thresholds[0])
    tags = m.labels_above_threshold(m.score_labels(m.encode_images(np.full((30, 30, 3), 128, np.uint8))))[0]
    assert [label for label, _ in tags if label == m.labels[0]] == []
    assert len(tags) == 5  # every other label passes a threshold of -1


def test_model_state_is_read_only(bundle_dir):
    m = dr.load(bundle_dir)
    m.manifest["labels"].append("x")
    assert "x" not in m.manifest["labels"]
    with pytest.raises(ValueError):
        m.classifiers[0, 0] = 1.0
    with pytest.raises(ValueError):
        m.thresholds[0] = 1.0


def test_a_recorded_session_config_is_applied_and_unknown_keys_are_refused(tmp_path):
    files, manifest = bundle_parts()
    graphs = json.loads(json.dumps(manifest["graphs"]))
    graphs["image_encoder"]["session_config"] = {"session.x64quantprecision": "1"}
    model = dr.load(write_bundle(tmp_path / "ok", files, resign(dict(manifest, graphs=graphs))), lazy=False)
    opts = model._sessions["image_encoder"].get_session_options()
    assert opts.get_session_config_entry("session.x64quantprecision") == "1"
    assert model.encode_images([np.zeros((224, 224, 3), np.uint8)]).shape == (1, 16)
    plain = dr.load(write_bundle(tmp_path / "plain", files, manifest), lazy=False)  # absent: defaults
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain._sessions["image_encoder"].get_session_options().get_session_config_entry("session.x64quantprecision")
    for i, (value, message) in enumerate([
            ({"session.intra_op.allow_spinning": "1"}, "graphs.text_encoder.session_config.*not allowed"),
            ({"session.x64quantprecision": "2"}, "session.x64quantprecision' is '2'"),
            (["session.x64quantprecision"], "must be an object")]):
        graphs = json.loads(json.dumps(manifest["graphs"]))
        graphs["text_encoder"]["session_config"] = value
        with pytest.raises(dr.BundleError, match=message):
            dr.load(write_bundle(tmp_path / f"bad{i}", files, resign(dict(manifest, graphs=graphs))))
