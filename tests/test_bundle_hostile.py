"""Bundles that pass every digest check yet hold what no answer may be made of (issue 24): a weights file with
bytes its manifest does not account for, classifiers past float32's range, graphs whose outputs are NaN. Each
is refused with one line naming the bundle and the file or graph: at load, at first use, by the CLI and by
the server (503, never a 500 or a traceback)."""
import io
import signal
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dagnn_runtime as dr
from bundle_factory import bundle_dir, bundle_parts, image_encoder, model, npy_bytes, seal, write_bundle  # noqa: F401
from dagnn_cli.main import app
from dagnn_runtime.indexes import open_index
from hostile import photo
from serve_helpers import serve

SIZE = 224


def _jpeg(path) -> str:
    Image.fromarray(photo()).save(path, quality=95)
    return str(path)


def _one_error_line(result) -> str:
    """The CLI failed with exactly one 'error: ' line on stderr and no traceback."""
    assert result.exit_code not in (0, None), result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


# ---- a weights file of the wrong length ---------------------------------------------------------------------
@pytest.mark.parametrize("graph", ["text_encoder", "image_encoder"])
@pytest.mark.parametrize("archive", [False, True])
def test_a_weights_file_with_trailing_bytes_is_refused_naming_it(tmp_path, graph, archive):
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    name = manifest["graphs"][graph]["weights"]["file"]
    expected = len(files[name])
    files = dict(files, **{name: files[name] + b"\x00" * 100})
    path = write_bundle(tmp_path / ("b.dagnn" if archive else "b"), files, seal(manifest, files), archive=archive)
    model = dr.load(path)  # every digest matches: the length is what is wrong
    with pytest.raises(dr.BundleError) as err:
        model.prepare(graph.removesuffix("_encoder"))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and repr(name) in message
    assert f"is {expected + 100} bytes" in message and f"exactly {expected} bytes" in message
    with pytest.raises(dr.BundleError, match="exactly"):
        dr.load(path, lazy=False)


@pytest.mark.parametrize("command", ["tag", "info"])
def test_the_cli_refuses_a_weights_file_with_trailing_bytes_in_one_line(tmp_path, command):
    """``tag`` at the image graph's first use; ``info``, which checks every file, without running one."""
    files, manifest = bundle_parts(tag_ids=True, weights_out=True)
    files = dict(files, **{"image_encoder.onnx.data": files["image_encoder.onnx.data"] + b"junk"})
    path = write_bundle(tmp_path / "b", files, seal(manifest, files))
    args = ["--image", _jpeg(tmp_path / "q.jpg")] if command == "tag" else []
    result = CliRunner().invoke(app, [command, "--bundle", str(path), *args])
    line = _one_error_line(result)
    assert str(path) in line and "'image_encoder.onnx.data'" in line and "exactly" in line


# ---- classifiers and graph outputs that are not finite ------------------------------------------------------
@pytest.mark.parametrize("value, dtype", [(np.nan, np.float32), (np.inf, np.float32), (1e39, np.float64)])
def test_classifiers_that_are_not_finite_in_float32_are_refused_at_load(tmp_path, value, dtype):
    """1e39 is a finite float64 but infinite as the float32 the scores are computed in: its label's scores
    were NaN."""
    files, manifest = bundle_parts()
    z = np.load(io.BytesIO(files["classifiers.npy"])).astype(dtype)
    z[2, 3] = value
    files = dict(files, **{"classifiers.npy": npy_bytes(z)})
    path = write_bundle(tmp_path / "b", files, seal(manifest, files))
    with pytest.raises(dr.BundleError, match=r"'classifiers.npy' must hold finite floats") as err:
        dr.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def nan_bundle(out, where: str):
    """A sealed bundle whose image graph gives NaN: in its classifiers Z (``label_scores``), or in its
    weights (``embedding``, and so every score). Its classifiers.npy is finite: only running the graph shows it."""
    rng = np.random.default_rng(1)
    files, manifest = bundle_parts(size=SIZE)
    c, d = len(manifest["labels"]), manifest["embedding_dim"]
    z = rng.standard_normal((c, d)).astype(np.float32)
    w1, w2 = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((16, d)).astype(np.float32)
    if where == "z":
        z[0, 0] = np.nan
    else:
        w2[:, 0] = np.nan
    files = dict(files, **{"image_encoder.onnx": image_encoder(w1, w2, z, SIZE)})
    return write_bundle(out, files, seal(manifest, files))


def _image_index(model, out):
    """An image index of ``model``'s embedding space holding a few finite vectors (the bundle cannot encode)."""
    index = open_index(out / "image", model=model, modality="image", create=True)
    v = np.random.default_rng(0).standard_normal((4, model.embedding_dim)).astype(np.float32)
    index.add(v, [f"item{i}" for i in range(4)], [{"labels": []} for _ in range(4)])
    index.save()
    index.close()
    return out


@pytest.mark.parametrize("where, output", [("z", "label_scores"), ("weights", "embedding")])
def test_a_graph_giving_nan_is_refused_by_tag_and_search(tmp_path, where, output):
    path = nan_bundle(tmp_path / "b", where)
    model = dr.load(path)
    image = _jpeg(tmp_path / "q.jpg")
    searcher = dr.Searcher(model, _image_index(model, tmp_path / "index"))
    try:
        for call in (lambda: searcher.tag([image]), lambda: searcher.search(image=image, target="image"),
                     lambda: model.encode_images([image])):
            with pytest.raises(dr.BundleError) as err:
                call()
            message = str(err.value)
            assert "\n" not in message and str(path) in message and "image_encoder" in message, message
            assert f"NaN or infinite {output}" in message
    finally:
        searcher.close()
    # the text graph is sound: text queries still work
    assert np.isfinite(model.encode_texts(["sky"])).all()


def test_a_non_finite_bag_of_words_is_the_callers_error_not_the_bundles(model):
    bow = np.zeros((2, len(model.vocab)), dtype=np.float32)
    bow[1, 0] = np.nan
    with pytest.raises(dr.InputError, match="NaN"):
        model.encode_bow(bow)
    with pytest.raises(dr.InputError, match="NaN"):
        model.score_labels(np.full((1, model.embedding_dim), np.nan, dtype=np.float32))


def test_the_cli_refuses_a_nan_graph_in_one_line(tmp_path):
    path = nan_bundle(tmp_path / "b", "z")
    result = CliRunner().invoke(app, ["tag", "--bundle", str(path), "--image", _jpeg(tmp_path / "q.jpg")])
    line = _one_error_line(result)
    assert str(path) in line and "image_encoder" in line and "label_scores" in line


def test_the_server_answers_503_not_500_for_a_nan_graph(tmp_path):
    pytest.importorskip("uvicorn", reason="needs the [serve] extra")
    path = nan_bundle(tmp_path / "b", "weights")
    index = _image_index(dr.load(path), tmp_path / "index")
    logs = tmp_path / "logs"
    logs.mkdir()
    image = (tmp_path / "q.jpg")
    _jpeg(image)
    with serve(path, index, logs) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        for _ in range(2):  # and it stays up: the second request gets the same answer
            res = client.post("/v1/tag", files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")})
            assert res.status_code == 503, res.text
            error = res.json()["error"]
            assert error["code"] == "unavailable" and "image_encoder" in error["message"]
            assert "NaN" in error["message"] and "\n" not in error["message"]
        res = client.post("/v1/search", files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")})
        assert res.status_code == 503, res.text
        assert client.get("/healthz").status_code == 200
    for _ in range(50):
        if srv.proc.poll() is not None:
            break
        time.sleep(0.1)
    assert srv.proc.returncode in (0, -signal.SIGTERM), srv.log()
    assert "Traceback" not in srv.log() and " 500" not in srv.log(), srv.log()
