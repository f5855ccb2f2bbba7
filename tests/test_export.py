"""Exporter: a small DAGNN (tiny backbone) on real photos → bundle; checks parity with torch, the runtime
loader, refusal of tampered/missing files, atomicity of failed exports, archives, int8 and the CLI."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")
ort = pytest.importorskip("onnxruntime")

import dagnn_runtime as dr  # noqa: E402
from dagnn_export.backbones import build_backbone  # noqa: E402
from dagnn_export.config import make_config  # noqa: E402
from dagnn_export.export import ExportError, export_bundle  # noqa: E402
from dagnn_export.manifest import embedding_space  # noqa: E402
from dagnn_export.onnx_graphs import tag_id_matrix  # noqa: E402
from dagnn_runtime.digests import bundle_digest, file_sha256  # noqa: E402
from dagnn_export.graph import correlation_matrices, propagation_matrix  # noqa: E402
from dagnn_export.model import build_model  # noqa: E402
from dagnn_runtime.dataset import Dataset  # noqa: E402
from dagnn_runtime.metrics import cross_modal_map, l2_normalize  # noqa: E402
from dagnn_runtime.preprocess import load_batch  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "dagnn_export" / "demo" / "data" / "mirflickr-mini"
SMALL = dict(common_dim=32, text_hidden=64, text_dim=16, gv2_hidden=16, gt2_hidden=24, disc_hidden=12)
N_PAIRS, N_TEST = 44, 12


def make_dataset(root: Path) -> Path:
    """A data set folder of the first real demo photos, with a fixed test split."""
    root.mkdir()
    (root / "images").mkdir()
    pairs = []
    for line in (DEMO / "pairs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("image") and len(pairs) < N_PAIRS:
            shutil.copy(DEMO / rec["image"], root / rec["image"])
            pairs.append(rec)
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    shutil.copy(DEMO / "labels.txt", root / "labels.txt")
    tags = sorted({t for p in pairs for t in p["tags"]})
    (root / "tag_vocab.txt").write_text("\n".join(tags) + "\n")
    (root / "split_test.json").write_text(json.dumps({"test": [p["row"] for p in pairs[-N_TEST:]]}))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    data = make_dataset(tmp_path_factory.mktemp("data") / "ds")
    dataset = Dataset.load(data)
    splits = dataset.splits(seed=0, val_fraction=0.25)
    cfg = make_config("mirflickr", "dagnn", **SMALL)
    cfg.data, cfg.backbone = str(data), "tiny"
    graph = correlation_matrices(dataset.label_matrix(splits.train), cfg.resolved_tau(), cfg.p)
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    model = build_model(cfg, backbone.feature_dim, len(dataset.vocab),
                        np.load(DEMO / "label_embeddings.npy", allow_pickle=False),
                        propagation_matrix(graph, cfg.gnn)).eval()
    config = {**cfg.to_dict(), "feature_dim": backbone.feature_dim, "vocab_size": len(dataset.vocab),
              "num_labels": len(dataset.labels)}
    return dataset, splits, model, backbone, config


@pytest.fixture(scope="module")
def bundle(setup, tmp_path_factory):
    dataset, splits, model, backbone, config = setup
    out = tmp_path_factory.mktemp("export") / "bundle"
    export_bundle(model, backbone, config, dataset, splits, out)
    return out


def torch_outputs(setup, idx):
    dataset, _, model, backbone, _ = setup
    pixels = load_batch([dataset.image_path(i) for i in idx])
    with torch.no_grad():
        out = model(backbone(torch.from_numpy(pixels)), torch.from_numpy(dataset.bow(idx)))
    return pixels, dataset.bow(idx), {k: out[k].numpy() for k in ("v", "t", "scores_v", "scores_t")}


def test_bundle_files_manifest_and_digests(bundle, setup):
    dataset = setup[0]
    names = sorted(p.name for p in bundle.iterdir())
    assert names == sorted(["image_encoder.onnx", "image_encoder.onnx.data", "text_encoder.onnx",
                            "text_encoder.onnx.data", "classifiers.npy", "vocab.txt", "MODEL_CARD.md", "manifest.json"])
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["format"] == "dagnn-bundle" and m["format_version"] == 3
    text = m["graphs"]["text_encoder"]
    assert (text["input"], text["input_dtype"], text["pad_id"]) == ("tags", "int64", len(dataset.vocab))
    assert m["labels"] == dataset.labels and m["vocabulary"]["size"] == len(dataset.vocab)
    assert (bundle / "vocab.txt").read_text().split() == dataset.vocab
    assert m["files"] == {name: file_sha256(bundle / name) for name in names if name != "manifest.json"}
    assert m["embedding_space"] == embedding_space(m["files"], m)
    assert m["model"]["precision"] == "fp32" and m["config"]["backbone"] == "tiny"
    assert m["graphs"]["image_encoder"]["output_shapes"]["label_scores"] == ["N", len(dataset.labels)]
    assert len(m["thresholds"]["values"]) == len(m["thresholds"]["f1"]) == len(dataset.labels)
    diffs = m["parity"]["max_abs_diff"]
    assert set(diffs) == {"image_embedding", "image_scores", "text_embedding", "text_scores"}
    assert all(0 <= v <= 1e-4 for v in diffs.values()) and m["parity"]["samples"] == len(setup[1].val)
    card = (bundle / "MODEL_CARD.md").read_text()
    assert f"{m['metrics']['test']['avg']:.4f}" in card and "## Limits" in card and "## Intended use" in card


def test_onnxruntime_alone_matches_torch_with_any_batch_size(bundle, setup):
    dataset, splits, model, _, _ = setup
    z = np.load(bundle / "classifiers.npy", allow_pickle=False)
    with torch.no_grad():
        np.testing.assert_allclose(z, model.classifiers().numpy(), atol=1e-6)
    img = ort.InferenceSession(str(bundle / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    txt = ort.InferenceSession(str(bundle / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    for idx in (splits.test[:1], splits.test[:7]):  # dynamic batch
        pixels, bow, ref = torch_outputs(setup, idx)
        v, sv = img.run(["embedding", "label_scores"], {"pixels": pixels})
        t, st = txt.run(["embedding", "label_scores"], {"tags": tag_id_matrix(bow)})
        for got, key in ((v, "v"), (sv, "scores_v"), (t, "t"), (st, "scores_t")):
            np.testing.assert_allclose(got, ref[key], atol=1e-4, err_msg=key)
        np.testing.assert_allclose(sv, l2_normalize(v) @ l2_normalize(z).T, atol=1e-5)


def test_the_exported_manifest_carries_its_own_digest(bundle):
    """The exporter writes bundle_digest, so load() can tell a hand-edited manifest from an exported one."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["bundle_digest"] == dr.load(bundle, providers="cpu").bundle_digest
    edited = dict(manifest, labels=list(reversed(manifest["labels"])))
    assert bundle_digest(edited) != manifest["bundle_digest"]


def test_reported_map_is_that_of_the_exported_graphs(bundle, setup):
    dataset, splits, _, _, _ = setup
    model = dr.load(bundle, providers="cpu")
    idx = splits.test
    v = model.encode_images([dataset.image_path(i) for i in idx])
    t = model.encode_bow(dataset.bow(idx))
    expected = cross_modal_map(v, t, dataset.label_matrix(idx))
    reported = json.loads((bundle / "manifest.json").read_text())["metrics"]["test"]
    assert reported == pytest.approx(expected, abs=1e-5)


def test_loader_refuses_tampered_and_missing_files(bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    raw = bytearray((tampered / "classifiers.npy").read_bytes())
    raw[-1] ^= 0x01
    (tampered / "classifiers.npy").write_bytes(bytes(raw))
    with pytest.raises(dr.BundleError, match="classifiers.npy"):
        dr.load(tampered)
    missing = tmp_path / "missing"
    shutil.copytree(bundle, missing)
    (missing / "text_encoder.onnx").unlink()
    with pytest.raises(dr.BundleError, match="text_encoder.onnx"):
        dr.load(missing)


def test_failed_export_leaves_nothing_at_the_target(setup, tmp_path):
    dataset, splits, model, backbone, config = setup
    broken = tmp_path / "ds"
    shutil.copytree(dataset.root, broken)
    bad = dataset.image_path(splits.test[3]).relative_to(dataset.root)
    (broken / bad).write_bytes(b"not a jpeg")  # fails late: while measuring test mAP, after the graphs
    out = tmp_path / "out" / "bundle"
    out.parent.mkdir()
    with pytest.raises(Exception, match=bad.name):
        export_bundle(model, backbone, config, Dataset.load(broken), splits, out, archive=True)
    assert list(out.parent.iterdir()) == []


class _TraceBakesMean(torch.nn.Module):
    """Tracing turns ``float(x.mean())`` into a constant: the ONNX graph then differs from torch."""

    def __init__(self, backbone):
        super().__init__()
        self.inner, self.image_size = backbone, backbone.image_size

    def forward(self, pixels):
        h = self.inner(pixels)
        return h * float(h.mean())


def test_parity_failure_is_loud_and_writes_nothing(setup, tmp_path):
    dataset, splits, model, backbone, config = setup
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="onnxruntime and torch disagree.*image_embedding"):
        export_bundle(model, _TraceBakesMean(backbone), config, dataset, splits, out)
    assert list(tmp_path.iterdir()) == []


def test_existing_target_needs_force(setup, bundle):
    dataset, splits, model, backbone, config = setup
    with pytest.raises(ExportError, match="already exists.*--force"):
        export_bundle(model, backbone, config, dataset, splits, bundle)


def test_archive_round_trip(setup, bundle, tmp_path):
    dataset, splits, model, backbone, config = setup
    archive = tmp_path / "model.dagnn"
    assert export_bundle(model, backbone, config, dataset, splits, archive) == archive
    assert [p.name for p in tmp_path.iterdir()] == ["model.dagnn"]  # archive only, no folder, no temp
    from_zip, from_dir = dr.load(archive, providers="cpu"), dr.load(bundle, providers="cpu")
    paths = [dataset.image_path(i) for i in splits.val[:3]]
    np.testing.assert_allclose(from_zip.encode_images(paths), from_dir.encode_images(paths), atol=1e-6)
    np.testing.assert_array_equal(from_zip.classifiers, from_dir.classifiers)
    assert from_zip.labels == from_dir.labels
    # --archive beside a folder writes both, with the same files
    both = tmp_path / "b"
    export_bundle(model, backbone, config, dataset, splits, both, archive=True)
    assert (tmp_path / "b.dagnn").is_file() and (both / "manifest.json").is_file()
    assert dr.load(tmp_path / "b.dagnn").embedding_space == dr.load(both).embedding_space


@pytest.mark.parametrize("normalisation", ["imagenet", "lite"])
def test_int8_static_quantisation(setup, tmp_path, normalisation):
    onnx = pytest.importorskip("onnx")
    from dagnn_export.backbones import LITE_MEAN, LITE_STD, ImageBackbone

    dataset, splits, model, backbone, config = setup
    if normalisation == "lite":  # (x - 127) / 128: the pixels themselves become the quantised conv input
        backbone = ImageBackbone("tiny", backbone.body, backbone.feature_dim, mean=LITE_MEAN, std=LITE_STD)
    out = tmp_path / "int8"
    export_bundle(model, backbone, config, dataset, splits, out, quantize="int8", calibration_size=16,
                  min_int8_cosine=0.9)
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["precision"] == "int8" and m["graphs"]["image_encoder"]["precision"] == "int8"
    assert m["quantization"]["calibration_images"] == 16 and m["quantization"]["format"] == "QDQ"
    q = m["parity"]["int8_vs_fp32"]
    assert 0.9 <= q["image_embedding_cosine_mean"] <= 1.0 and q["samples"] == len(splits.val)
    assert 0.9 <= q["text_embedding_cosine_mean"] <= 1.0
    assert m["graphs"]["text_encoder"]["precision"] == "int8"
    assert m["quantization"]["text_encoder"]["method"] == "static"
    text_ops = {n.op_type for n in onnx.load(str(out / "text_encoder.onnx")).graph.node}
    assert "QuantizeLinear" in text_ops and "Gemm" not in text_ops
    texts = [dataset.pairs[i].tags for i in splits.val if dataset.pairs[i].tags][:6]
    int8_model = dr.load(out, providers="cpu")
    alone = np.concatenate([int8_model.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(int8_model.encode_texts(texts), alone, atol=1e-6)  # calibrated, batch-independent
    assert set(m["metrics"]) >= {"test", "test_fp32"}
    chosen = m["quantization"]["int8_config"]  # fastest configuration first; the chosen one is the last tried
    assert chosen["attempts"][-1]["name"] == chosen["chosen"] and chosen["samples"] == len(splits.val)
    assert all(a["cosine_mean"] < 0.9 for a in chosen["attempts"][:-1])
    assert chosen["attempts"][-1]["cosine_mean"] == q["image_embedding_cosine_mean"]  # verified as served
    assert m["graphs"]["image_encoder"]["int8_kernels"] == chosen["kernels"]  # a requirement, not a CPU's setting
    assert "session_config" not in m["graphs"]["image_encoder"]
    graph = onnx.load(str(out / "image_encoder.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops)
    direct = m["quantization"]["first_conv_input"].startswith("uint8 pixels")
    assert direct == (normalisation == "lite")
    assert ("Mul" in ops and "Cast" in ops) == (not direct)  # the float pass over the pixels is gone
    loaded = dr.load(out, providers="cpu")
    paths = [dataset.image_path(i) for i in splits.val[:2]]
    emb = loaded.encode_images(paths)
    assert emb.shape == (2, config["common_dim"]) and np.isfinite(emb).all()
    # whatever kernels this CPU is given, they compute the exact products the export verified
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGNN_INT8_KERNELS", "exact")
        exact = dr.load(out, providers="cpu").encode_images(paths)
    np.testing.assert_allclose(emb, exact, atol=1e-5)
    with torch.no_grad():
        ref = model.image_common(backbone(torch.from_numpy(load_batch(paths)))).numpy()
    assert np.sum(emb * l2_normalize(ref), axis=1).min() > 0.9


def test_cli_exports_a_run_directory(setup, tmp_path):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app
    from dagnn_export.run import load_run

    dataset, splits, model, _, config = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), run / "model.pt")
    (run / "splits.json").write_text(json.dumps(splits.to_json(dataset)))
    (run / "labels.txt").write_text("\n".join(dataset.labels) + "\n")
    (run / "vocab.txt").write_text("\n".join(dataset.vocab) + "\n")
    (run / "metrics.json").write_text(json.dumps({"split": "test", "i2t": 0.5, "t2i": 0.6, "avg": 0.55}))
    load_run(run)  # the hand-made run is what training writes
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "b"), "--archive"])
    assert result.exit_code == 0, result.output
    m = dr.load(tmp_path / "b.dagnn").manifest
    assert m["metrics"]["torch_run"]["test"] == {"i2t": 0.5, "t2i": 0.6, "avg": 0.55}
    again = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "b")])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output  # one line, no traceback
    (run / "vocab.txt").write_text("other\n")
    wrong = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "c")])
    assert wrong.exit_code == 1 and "vocab.txt" in wrong.output


def test_calibration_images_from_folder_data_set_or_training_split(setup, tmp_path):
    from dagnn_export.quantize import calibration_images

    dataset, splits = setup[0], setup[1]
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i in splits.val[:3]:
        shutil.copy(dataset.image_path(i), folder / dataset.image_path(i).name)
    (folder / "notes.txt").write_text("not an image")
    paths, what = calibration_images(tmp_path / "photos", dataset, splits.train, count=10)
    assert sorted(p.name for p in paths) == sorted(dataset.image_path(i).name for i in splits.val[:3])
    paths, what = calibration_images(dataset.root, dataset, splits.train, count=5)
    assert len(paths) == 5 and all(p.is_file() for p in paths)
    paths, what = calibration_images(None, dataset, splits.train, count=1000)
    assert sorted(paths) == sorted(dataset.image_path(i) for i in splits.train) and what == "training split"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no images found.*empty"):
        calibration_images(tmp_path / "empty", dataset, splits.train, count=5)


def test_cli_refuses_bad_options_before_working(tmp_path):
    from typer.testing import CliRunner

    import dagnn_cli.main  # noqa: F401  (registers every command on the app)
    from dagnn_cli.app import app

    runner = CliRunner()
    bad = runner.invoke(app, ["export", "--run", str(tmp_path), "--out", str(tmp_path / "b"), "--quantize", "fp16"])
    assert bad.exit_code == 1 and "--quantize 'fp16' is not supported" in bad.output
    cal = runner.invoke(app, ["export", "--run", str(tmp_path), "--out", str(tmp_path / "b"),
                              "--calibration-data", str(tmp_path)])
    assert cal.exit_code == 1 and "only applies with --quantize int8" in cal.output
    missing = runner.invoke(app, ["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert not (tmp_path / "b").exists()


def test_int8_takes_the_first_configuration_that_holds_or_refuses_listing_every_attempt(setup, bundle, tmp_path):
    from dagnn_export.quantize import INT8_CONFIGS, choose_int8_config

    dataset, splits, model, backbone, config = setup
    with pytest.raises(ExportError) as err:  # a threshold no configuration can meet
        export_bundle(model, backbone, config, dataset, splits, tmp_path / "q", quantize="int8",
                      calibration_size=16, min_int8_cosine=1.01)
    message = str(err.value)
    assert "drift from fp32 under every configuration" in message and not (tmp_path / "q").exists()
    listed = [part.split(" mean ")[0] for part in message.split(": ")[-1].split("; ")]
    assert listed == [name for name, *_ in INT8_CONFIGS]

    # the chain on real graphs, quantised from the fp32 bundle's image graph: each configuration alone, then
    # the chain at a threshold only the best one meets, which must stop there and list the ones before it
    cal = [dataset.image_path(i) for i in splits.train[:16]]
    val = [dataset.image_path(i) for i in splits.val]

    def run(configs, threshold, name):
        work = tmp_path / name
        work.mkdir()
        return choose_int8_config(bundle / "image_encoder.onnx", work / "out.onnx", cal, val, 224, work,
                                  min_cosine=threshold, configs=configs)["int8_config"]

    alone = [run([c], -1.0, f"alone{i}")["attempts"][0] for i, c in enumerate(INT8_CONFIGS)]
    assert [a["quantizer"] for a in alone] == [c[1] for c in INT8_CONFIGS]
    best = max(a["cosine_mean"] for a in alone)
    first = next(i for i, a in enumerate(alone) if a["cosine_mean"] >= best)
    got = run(INT8_CONFIGS, best, "chain")
    assert got["chosen"] == INT8_CONFIGS[first][0] and got["kernels"] == INT8_CONFIGS[first][2]
    assert [a["cosine_mean"] for a in got["attempts"]] == [a["cosine_mean"] for a in alone[:first + 1]]
    assert (tmp_path / "chain" / "out.onnx").is_file()


def test_int8_7bit_matmul_weights_leave_depthwise_convolutions_at_8_bits(tmp_path):
    """``reduce_range="matmul"``: every conv/Gemm weight that goes through the 16-bit-pair GEMM kernels is
    quantised into 7 bits (|q| <= 64), the depthwise convolution's keeps its full 8 bits."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from dagnn_export.backbones import ImageBackbone
    from dagnn_export.quantize import quantize_image_graph

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = ImageBackbone("t", torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 8, image_size=32)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, pixels):
            return self.head(self.backbone(pixels))

    fp32 = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as in onnx_graphs
        torch.onnx.export(Net().eval(), (torch.zeros(1, 32, 32, 3, dtype=torch.uint8),), str(fp32),
                          input_names=["pixels"], output_names=["out"], opset_version=17, dynamo=False,
                          dynamic_axes={"pixels": {0: "N"}, "out": {0: "N"}})
    photos = sorted(DEMO.glob("images/*.jpg"))[:8]
    ranges = {}
    for which in ("none", "matmul"):
        out = tmp_path / f"{which}.onnx"
        record = quantize_image_graph(fp32, out, photos, 32, tmp_path, reduce_range=which)
        assert ("7-bit" in record["weights"]) == (which == "matmul")
        model = onnx.load(str(out))
        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                   if i.data_type == onnx.TensorProto.INT8}
        producer = {o: n for n in model.graph.node for o in n.output}
        for node in model.graph.node:
            if node.op_type in ("Conv", "Gemm"):
                dq = producer[node.input[1]]
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                kind = "depthwise" if group > 1 else node.op_type
                ranges[which, kind] = int(np.abs(weights[dq.input[0]].astype(np.int32)).max())
    assert ranges["none", "Conv"] > 64 and ranges["none", "Gemm"] > 64 and ranges["none", "depthwise"] > 64
    assert ranges["matmul", "Conv"] <= 64 and ranges["matmul", "Gemm"] <= 64
    assert ranges["matmul", "depthwise"] > 64
    kept = tmp_path / "kept.onnx"  # keep_fp32: the named node stays a float Gemm on float weights
    quantize_image_graph(fp32, kept, photos, 32, tmp_path, keep_fp32=["/head/Gemm"])
    model = onnx.load(str(kept))
    producer = {o: n for n in model.graph.node for o in n.output}
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert gemm.input[1] not in producer or producer[gemm.input[1]].op_type != "DequantizeLinear"
    with pytest.raises(ExportError, match="unknown reduce_range 'half'"):
        quantize_image_graph(fp32, tmp_path / "x.onnx", photos, 32, tmp_path, reduce_range="half")
