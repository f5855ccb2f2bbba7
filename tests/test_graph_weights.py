"""Bundle format 3: graphs whose larger tensors live in ``<graph>.onnx.data``, handed to onnxruntime by the
runtime after their SHA-256 is checked; never read from anywhere the manifest does not name."""
import json
import shutil

import numpy as np
import pytest

import dagnn_runtime as dr
from bundle_factory import bundle_parts, resign, seal, write_bundle

TEXTS = ["sky, clouds", ["dog", "cat"], "sea beach water night"]
PIXELS = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)


def test_graph_files_are_small_and_their_weights_sit_beside_them():
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    assert manifest["format_version"] == 3
    for graph in ("image_encoder", "text_encoder"):
        spec = manifest["graphs"][graph]["weights"]
        assert spec["file"] == manifest["graphs"][graph]["file"] + ".data" and spec["file"] in manifest["files"]
        assert all(t["offset"] % 64 == 0 for t in spec["tensors"])
    inside, _ = bundle_parts(tag_ids=True)
    assert len(files["text_encoder.onnx"]) < len(inside["text_encoder.onnx"]) / 2


@pytest.mark.parametrize("archive", [False, True])
def test_format_3_encodes_exactly_as_the_same_weights_kept_inside(tmp_path, archive):
    """Same seed → same weights: moving them out of the graphs changes no output bit, folder or archive."""
    inside = dr.load(write_bundle(tmp_path / "inside", *bundle_parts(tag_ids=True)))
    path = write_bundle(tmp_path / ("out.dagnn" if archive else "out"), *bundle_parts(tag_ids=True, weights_out=True),
                        archive=archive)
    out = dr.load(path, lazy=False)
    np.testing.assert_array_equal(out.encode_texts(TEXTS), inside.encode_texts(TEXTS))
    np.testing.assert_array_equal(out.encode_pixels(PIXELS), inside.encode_pixels(PIXELS))
    np.testing.assert_array_equal(out.encode_texts(TEXTS * 10), inside.encode_texts(TEXTS * 10))  # threaded


def test_the_weights_files_belong_to_the_embedding_space(tmp_path):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    other = dict(files)
    data = bytearray(other["text_encoder.onnx.data"])
    data[100] ^= 0x40
    other["text_encoder.onnx.data"] = bytes(data)
    a = dr.load(write_bundle(tmp_path / "a", files, manifest))
    b = dr.load(write_bundle(tmp_path / "b", other, seal(manifest, other)))
    assert a.embedding_space != b.embedding_space


@pytest.mark.parametrize("archive", [False, True])
def test_a_changed_weights_file_is_refused_at_first_use_naming_it(tmp_path, archive):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    data = bytearray(files["image_encoder.onnx.data"])
    data[len(data) // 2] ^= 0x01
    files["image_encoder.onnx.data"] = bytes(data)
    m = dr.load(write_bundle(tmp_path / ("c.dagnn" if archive else "c"), files, manifest, archive=archive))
    assert m.encode_texts(["sky"]).shape == (1, 16)  # the text graph and its weights are intact
    with pytest.raises(dr.BundleError, match=r"image_encoder.onnx.data.*SHA-256"):
        m.encode_pixels(PIXELS[:1])


def test_a_missing_weights_file_is_refused_when_the_bundle_opens(tmp_path):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    del files["text_encoder.onnx.data"]
    with pytest.raises(dr.BundleError, match="missing file 'text_encoder.onnx.data'"):
        dr.load(write_bundle(tmp_path / "m", files, manifest))


@pytest.mark.parametrize("edit,message", [
    (lambda w: w.update(file="../x.data"), "not a plain file name"),
    (lambda w: w.update(file="unlisted.data"), "does not list 'unlisted.data'"),
    (lambda w: w.update(tensors=[]), "must list 1 to"),
    (lambda w: w["tensors"][0].update(offset=3), r"tensors\[0\].offset' is '3', not a non-negative multiple"),
    (lambda w: w["tensors"][0].update(dtype="object"), r"tensors\[0\].dtype' is 'object'"),
    (lambda w: w["tensors"][0].update(shape=[-1]), r"tensors\[0\].shape' must be"),
    (lambda w: w["tensors"].append(dict(w["tensors"][0])), "repeats the tensor name"),
    (lambda w: w.update(file="classifiers.npy"), "names one file for two roles"),
])
def test_a_bad_weights_entry_is_refused_naming_the_field(tmp_path, edit, message):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    edit(manifest["graphs"]["text_encoder"]["weights"])
    with pytest.raises(dr.BundleError, match=message):
        dr.load(write_bundle(tmp_path / "w", files, resign(manifest)))


def test_a_tensor_past_the_end_of_its_file_is_refused(tmp_path):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    manifest["graphs"]["text_encoder"]["weights"]["tensors"][0]["shape"] = [10_000, 10_000]
    m = dr.load(write_bundle(tmp_path / "p", files, resign(manifest)))
    with pytest.raises(dr.BundleError, match="past the file's"):
        m.encode_texts(["sky"])


def test_a_tensor_the_manifest_leaves_out_is_never_read_from_the_working_directory(tmp_path, monkeypatch):
    """A graph loaded from bytes would otherwise resolve its external data against the current folder."""
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    spec = manifest["graphs"]["text_encoder"]["weights"]
    assert len(spec["tensors"]) >= 2
    spec["tensors"] = spec["tensors"][1:]
    path = write_bundle(tmp_path / "b", files, resign(manifest))
    here = tmp_path / "cwd"
    here.mkdir()
    shutil.copy(path / "text_encoder.onnx.data", here / "text_encoder.onnx.data")
    monkeypatch.chdir(here)
    with pytest.raises(dr.BundleError, match="onnxruntime cannot load 'text_encoder.onnx'"):
        dr.load(path).encode_texts(["sky"])


def test_info_verifies_the_weights_files_too(tmp_path):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    files["text_encoder.onnx.data"] = files["text_encoder.onnx.data"][:-1] + b"\x7f"
    opened = dr.read_bundle(write_bundle(tmp_path / "i", files, manifest))
    with pytest.raises(dr.BundleError, match="text_encoder.onnx.data.*SHA-256"):
        opened.verify_graphs()
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["format_version"] == 3


def test_tensors_stored_as_typed_fields_move_out_too(tmp_path):
    """Quantisers write per-channel scales as ``float_data``, not raw bytes; they move out all the same."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from dagnn_export.graph_weights import split_weights

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((8, 300)).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [8, 300], w.ravel().tolist()),  # float_data
                     helper.make_tensor("b", TensorProto.FLOAT, [300], b.tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry, blob = split_weights(model, "g.onnx.data", min_bytes=1000)
    assert [t["name"] for t in entry["tensors"]] == ["w", "b"]
    (tmp_path / "g.onnx.data").write_bytes(blob)
    onnx.save(model, tmp_path / "g.onnx")
    x = rng.standard_normal((1, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w + b, rtol=1e-5, atol=1e-5)
