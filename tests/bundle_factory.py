"""Builds small but real bundles (ONNX graphs + manifest with correct checksums) without torch, and a tiny
data set folder to go with them, so that runtime and CLI tests run on the torch-free install.

Image encoder: uint8 NHWC pixels → Cast → /255 → mean over H, W (float64) → MatMul (3→h) → Tanh → MatMul (h→d).
Text encoder: bow → MatMul (V→d); or, in a format-2 bundle (``tag_ids=True``), padded tag ids (N, L) →
Gather (rows of the same matrix plus a zero row for the pad id V) → ReduceSum over L. Both also output
``label_scores`` = cos(embedding, Z), like exported ones.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

LABELS = ["animals", "clouds", "night", "sea", "sky", "water"]
VOCAB = ["sky", "clouds", "blue", "sunset", "sea", "beach", "water", "night", "city", "lights",
         "dog", "cat", "animal", "tree", "green", "red", "portrait", "bird", "snow", "river"]
OPSET = 17


def _scores_nodes(prefix: str, z: np.ndarray):
    """Nodes computing ``label_scores`` = normalise(embedding) @ normalise(Z).T, plus its initializers."""
    zn = (z / np.linalg.norm(z, axis=1, keepdims=True)).T.astype(np.float32)
    inits = [numpy_helper.from_array(zn, f"{prefix}_znt"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), f"{prefix}_axis1"),
             numpy_helper.from_array(np.array(1e-12, dtype=np.float32), f"{prefix}_eps")]
    nodes = [
        helper.make_node("Mul", ["embedding", "embedding"], [f"{prefix}_sq"]),
        helper.make_node("ReduceSum", [f"{prefix}_sq", f"{prefix}_axis1"], [f"{prefix}_ss"], keepdims=1),
        helper.make_node("Sqrt", [f"{prefix}_ss"], [f"{prefix}_norm"]),
        helper.make_node("Max", [f"{prefix}_norm", f"{prefix}_eps"], [f"{prefix}_safe"]),
        helper.make_node("Div", ["embedding", f"{prefix}_safe"], [f"{prefix}_unit"]),
        helper.make_node("MatMul", [f"{prefix}_unit", f"{prefix}_znt"], ["label_scores"]),
    ]
    return nodes, inits


def _model(name, nodes, inits, inp, d, c) -> bytes:
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", d]),
               helper.make_tensor_value_info("label_scores", TensorProto.FLOAT, ["N", c])]
    graph = helper.make_graph(nodes, name, [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bundle_factory")
    model.ir_version = 8
    return model.SerializeToString()


def image_encoder(w1: np.ndarray, w2: np.ndarray, z: np.ndarray, size: int, input_name: str = "pixels") -> bytes:
    d, c = w2.shape[1], z.shape[0]
    inp = helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", size, size, 3])
    nodes = [
        # Mean in float64: a float32 mean over 50k pixels would depend on the batch's reduction order.
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["f", "inv255"], ["x"]),
        helper.make_node("ReduceMean", ["x"], ["rgb64"], axes=[1, 2], keepdims=0),
        helper.make_node("Cast", ["rgb64"], ["rgb"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["rgb", "w1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["embedding"]),
    ]
    inits = [numpy_helper.from_array(np.array(1 / 255, dtype=np.float64), "inv255"),
             numpy_helper.from_array(w1.astype(np.float32), "w1"),
             numpy_helper.from_array(w2.astype(np.float32), "w2")]
    more_nodes, more_inits = _scores_nodes("s", z)
    return _model("image_encoder", nodes + more_nodes, inits + more_inits, inp, d, c)


def text_encoder(w: np.ndarray, z: np.ndarray, input_name: str = "bow") -> bytes:
    v, d = w.shape
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", v])
    nodes = [helper.make_node("MatMul", [input_name, "w"], ["embedding"])]
    inits = [numpy_helper.from_array(w.astype(np.float32), "w")]
    more_nodes, more_inits = _scores_nodes("s", z)
    return _model("text_encoder", nodes + more_nodes, inits + more_inits, inp, d, len(z))


def text_encoder_tags(w: np.ndarray, z: np.ndarray, input_name: str = "tags") -> bytes:
    """The same function as ``text_encoder(w, z)`` on tag ids: sum of the rows of ``w`` named by each row
    of ``(N, L)`` ids, padded with the vocabulary size (a zero row)."""
    v, d = w.shape
    inp = helper.make_tensor_value_info(input_name, TensorProto.INT64, ["N", "L"])
    nodes = [helper.make_node("Gather", ["w", input_name], ["rows"], axis=0),
             helper.make_node("ReduceSum", ["rows", "axis1"], ["embedding"], keepdims=0)]
    inits = [numpy_helper.from_array(np.vstack([w, np.zeros((1, d))]).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    more_nodes, more_inits = _scores_nodes("s", z)
    return _model("text_encoder", nodes + more_nodes, inits + more_inits, inp, d, len(z))


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(manifest: dict, files: dict) -> dict:
    """Fill ``files`` (SHA-256 of each file), ``embedding_space`` and ``bundle_digest`` as the exporter does."""
    manifest = dict(manifest)
    manifest["files"] = {name: sha256(data) for name, data in files.items()}
    from dagnn_export.graph_weights import weights_files

    subset = {name: manifest["files"][name] for name in
              ("image_encoder.onnx", "text_encoder.onnx", "classifiers.npy", *weights_files(manifest))}
    manifest["embedding_space"] = sha256(json.dumps(subset, sort_keys=True, separators=(",", ":")).encode())
    return resign(manifest)


def resign(manifest: dict) -> dict:
    """Recompute ``bundle_digest`` (the manifest's self-check) after a deliberate edit of the manifest, so a
    test reaches the check it is about instead of the tamper check; spelled out here as the documented rule."""
    body = {k: v for k, v in manifest.items() if k != "bundle_digest"}
    return dict(body, bundle_digest=sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()))


def write_bundle(out, files: dict, manifest: dict, archive: bool = False) -> Path:
    """Write ``files`` + ``manifest.json`` as a folder, or as a zip archive when ``archive``."""
    out = Path(out)
    members = dict(files)
    members["manifest.json"] = json.dumps(manifest, indent=2).encode()
    if archive:
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in members.items():
            (out / name).write_bytes(data)
    return out


def bundle_parts(d: int = 16, size: int = 224, labels=LABELS, vocab=VOCAB, seed: int = 0, hidden: int = 16,
                 thresholds=None, tag_ids: bool = False, weights_out: bool = False) -> tuple[dict, dict]:
    """(files, sealed manifest) of a random but valid bundle; ``tag_ids``: format 2, whose text graph takes
    padded tag ids instead of a bag of words; ``weights_out`` (with ``tag_ids``): format 3, whose graphs keep
    their larger tensors in ``.data`` files as the exporter writes them."""
    rng = np.random.default_rng(seed)
    c, v = len(labels), len(vocab)
    z = rng.standard_normal((c, d)).astype(np.float32)
    w1 = rng.standard_normal((3, hidden)).astype(np.float32) * 2
    w2 = rng.standard_normal((hidden, d)).astype(np.float32)
    wt = rng.standard_normal((v, d)).astype(np.float32)
    if thresholds is None:
        thresholds = np.round(rng.uniform(-0.3, 0.3, c), 4).tolist()
    files = {
        "image_encoder.onnx": image_encoder(w1, w2, z, size),
        "text_encoder.onnx": text_encoder_tags(wt, z) if tag_ids else text_encoder(wt, z),
        "classifiers.npy": npy_bytes(z),
        "vocab.txt": ("\n".join(vocab) + "\n").encode(),
        "MODEL_CARD.md": b"# Test bundle\n\nBuilt by tests/bundle_factory.py (random weights).\n",
    }
    manifest = {
        "format": "dagnn-bundle",
        "format_version": 2 if tag_ids else 1,
        "created": "2026-01-01T00:00:00Z",
        "model": {"name": "DAGNN", "variant": "test", "gnn": "none", "backbone": "mean_rgb", "precision": "fp32"},
        "labels": list(labels),
        "vocabulary": {"file": "vocab.txt", "size": v},
        "text": {"tokenizer": "lowercase, split on commas/semicolons/whitespace"},
        "preprocessing": {"size": size, "resize": "shorter_side_bicubic_center_crop", "layout": "NHWC",
                          "dtype": "uint8", "color": "RGB"},
        "embedding_dim": d,
        "graphs": {
            "image_encoder": {"file": "image_encoder.onnx", "input": "pixels", "outputs": ["embedding", "label_scores"]},
            "text_encoder": {"file": "text_encoder.onnx", "input": "tags" if tag_ids else "bow",
                             "outputs": ["embedding", "label_scores"]},
        },
        "classifiers": {"file": "classifiers.npy", "shape": [c, d]},
        "thresholds": {"values": list(thresholds), "f1": [0.5] * c, "split": "val"},
        "config": {"seed": seed, "split_seed": 0, "val_fraction": 0.1},
        "metrics": {"test": {"i2t": 0.5, "t2i": 0.5, "avg": 0.5}},
        "parity": {"max_abs_diff": {"image_embedding": 0.0, "text_embedding": 0.0, "image_scores": 0.0,
                                    "text_scores": 0.0}},
    }
    if weights_out:
        move_weights_out(files, manifest)
    return files, seal(manifest, files)


def move_weights_out(files: dict, manifest: dict, min_bytes: int = 64) -> None:
    """Format 3: each graph's tensors of ``min_bytes`` or more into ``<graph>.data`` (files and manifest changed
    in place), with the exporter's own function."""
    import onnx
    from dagnn_export.graph_weights import split_weights

    manifest["format_version"] = 3
    for graph in ("image_encoder", "text_encoder"):
        name = manifest["graphs"][graph]["file"]
        model = onnx.load_from_string(files[name])
        entry, blob = split_weights(model, name + ".data", min_bytes)
        files[name], files[entry["file"]] = model.SerializeToString(), blob
        manifest["graphs"][graph]["weights"] = entry


def build_bundle(out, archive: bool = False, **kwargs) -> Path:
    """A valid bundle at ``out`` (folder, or ``.dagnn`` archive when ``archive``); kwargs → ``bundle_parts``."""
    files, manifest = bundle_parts(**kwargs)
    return write_bundle(out, files, manifest, archive=archive)


COLOURS = {"sky": (90, 150, 235), "sea": (20, 60, 160), "night": (15, 15, 30), "animals": (150, 110, 60),
           "clouds": (225, 225, 235), "water": (40, 120, 150)}


def build_dataset(out, n_images: int = 24, n_text_only: int = 4, seed: int = 0, test: int = 8) -> Path:
    """A tiny data set folder (dagnn format) of coloured JPEG photos whose labels and tags follow the colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (out / "tag_vocab.txt").write_text("\n".join(VOCAB) + "\n")
    related = {"sky": ["sky", "blue"], "sea": ["sea", "beach", "water"], "night": ["night", "city", "lights"],
               "animals": ["dog", "cat", "animal"], "clouds": ["clouds", "sky"], "water": ["water", "river"]}
    records = []
    for row in range(n_images + n_text_only):
        main = LABELS[row % len(LABELS)]
        labels = sorted({main, LABELS[int(rng.integers(len(LABELS)))]})
        tags = sorted({t for name in labels for t in related[name][: 1 + int(rng.integers(3))]})
        image = None
        if row < n_images:
            colour = np.clip(np.array(COLOURS[main]) + rng.integers(-25, 26, 3), 0, 255)
            pixels = np.clip(colour + rng.normal(0, 12, (40 + row % 5, 48, 3)), 0, 255).astype(np.uint8)
            image = f"images/im{row}.jpg"
            Image.fromarray(pixels).save(out / image, quality=90)
        records.append({"row": row, "image": image, "tags": tags, "labels": labels})
    with open(out / "pairs.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    (out / "split_test.json").write_text(json.dumps({"test": list(range(n_images - test, n_images))}))
    return out


# ---- pytest fixtures shared by the runtime and CLI tests (import them into a test module to use them) ----
try:
    import pytest
except ImportError:  # the factory itself does not need pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def bundle_dir(tmp_path_factory) -> Path:
        return build_bundle(tmp_path_factory.mktemp("bundle") / "bundle")

    @pytest.fixture(scope="session")
    def model(bundle_dir):
        import dagnn_runtime

        return dagnn_runtime.load(bundle_dir)

    @pytest.fixture(scope="session")
    def data_dir(tmp_path_factory) -> Path:
        return build_dataset(tmp_path_factory.mktemp("data") / "data")
