"""Export a trained DAGNN to a bundle (see docs/bundle-format.md): two ONNX graphs, the classifiers Z,
the vocabulary, a manifest and a model card.

The label classifiers Z are produced ONCE here by running the GNN (``model.classifiers()``) and folded as
a constant into both graphs' ``label_scores``; serving never runs the GNN. Everything is written into a
temporary directory beside the target and only renamed into place after every check passed:

- ``onnx.checker`` on both graphs;
- parity onnxruntime vs torch on real validation pairs (fp32: max abs diff of embeddings and scores
  within ``parity_tol``; int8: cosine of the int8 image embeddings to the fp32 ones);
- thresholds calibrated and mAP measured with the exported graphs themselves (validation / test split);
- the finished bundle re-opened from disk with the runtime loader and queried.

A failed export therefore leaves nothing at the target.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dagnn_runtime import load
from dagnn_runtime.atomic import atomic_write, replace_dir, temp_dir_beside
from dagnn_runtime.bundle import DIGEST_FIELD, FORMAT, MANIFEST, bundle_digest, embedding_space_id, file_sha256
from dagnn_runtime.dataset import Dataset, Splits
from dagnn_runtime.metrics import calibrate_thresholds, cross_modal_map, l2_normalize, tagging_metrics
from dagnn_runtime.preprocess import RESIZE_MODE, load_batch

from .model_card import render_model_card

FORMAT_VERSION = 1
IMAGE_GRAPH, TEXT_GRAPH, CLASSIFIERS, VOCAB, CARD = (
    "image_encoder.onnx", "text_encoder.onnx", "classifiers.npy", "vocab.txt", "MODEL_CARD.md")
OUTPUTS = ("embedding", "label_scores")
ARCHIVE_SUFFIX = ".dagnn"
TEXT_TOKENIZER = "lowercase, split on commas/semicolons/whitespace"

Log = Callable[[str], None]


class ExportError(RuntimeError):
    """The export cannot be completed or a check failed; nothing was written at the target."""


# ----------------------------------------------------------------------------------------------- graphs
class ImageEncoder(nn.Module):
    """uint8 pixels (N, S, S, 3) → backbone → Gv1 → (v, cos(v, Z)) with Z a constant."""

    def __init__(self, backbone: nn.Module, model: nn.Module, z_unit: torch.Tensor):
        super().__init__()
        self.backbone, self.model = backbone, model
        self.register_buffer("z_unit", z_unit)

    def forward(self, pixels):
        v = self.model.image_common(self.backbone(pixels))
        return v, F.normalize(v, dim=1, eps=1e-12) @ self.z_unit.T


class TextEncoder(nn.Module):
    """0/1 bag of words (N, V) → text MLP → Gt1 → (t, cos(t, Z))."""

    def __init__(self, model: nn.Module, z_unit: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("z_unit", z_unit)

    def forward(self, bow):
        t = self.model.text_common(bow)
        return t, F.normalize(t, dim=1, eps=1e-12) @ self.z_unit.T


def _export_onnx(module: nn.Module, example: torch.Tensor, input_name: str, path: Path, opset: int) -> None:
    # The TorchScript-based exporter writes the requested opset natively; the torch.export-based one emits
    # opset 18 and its down-conversion to 17 fails on these graphs (ReduceMean), so use the former.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=list(OUTPUTS),
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={name: {0: "N"} for name in (input_name, *OUTPUTS)})


def check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------ files
def embedding_space(files: dict) -> str:
    """The id of the space the embeddings live in, computed exactly as the runtime checks it."""
    return embedding_space_id(files, (IMAGE_GRAPH, TEXT_GRAPH), CLASSIFIERS)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n", encoding="utf-8")


def _refuse_existing(out: Path, force: bool) -> None:
    if (out.exists() or out.is_symlink()) and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")


def write_archive(bundle_dir: Path, out: Path, force: bool = False, check=None) -> Path:
    """Zip a bundle directory into one ``.dagnn`` file, atomically; ``check(path)`` may vet the finished
    temporary archive before it replaces anything."""
    _refuse_existing(out, force)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(p.name for p in bundle_dir.iterdir() if p.is_file()):
                zf.write(bundle_dir / name, arcname=name)
        if check is not None:
            check(tmp)

    return atomic_write(out, write)


# ----------------------------------------------------------------------------------------------- inputs
def split_indices(dataset: Dataset, splits) -> dict[str, np.ndarray]:
    """Positions in ``dataset.pairs`` of train/val/test, from a ``Splits`` or a splits.json dict of rows."""
    if isinstance(splits, Splits):
        return {"train": splits.train, "val": splits.val, "test": splits.test}
    out = {}
    for name in ("train", "val", "test"):
        rows = splits.get(name)
        if rows is None:
            raise ExportError(f"splits have no {name!r} list")
        missing = [r for r in rows if r not in dataset.row_index]
        if missing:
            raise ExportError(f"{len(missing)} {name} rows of the run are not in the data set {dataset.root}, "
                              f"e.g. {missing[:5]}")
        out[name] = np.array([dataset.row_index[r] for r in rows], dtype=np.int64)
    return out


def _image_paths(dataset: Dataset, idx: np.ndarray, split: str) -> list[Path]:
    paths = [dataset.image_path(i) for i in idx]
    no_image = [dataset.pairs[i].row for i, p in zip(idx, paths) if p is None]
    if no_image:
        raise ExportError(f"{split} rows without an image, e.g. {no_image[:5]}")
    return paths


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def calibration_images(source: Path | None, dataset: Dataset, train_idx: np.ndarray, count: int,
                       seed: int = 0) -> tuple[list[Path], str]:
    """Up to ``count`` images for int8 calibration: from a data set folder or a folder of images, else
    from the run's training split. Returns (paths, description)."""
    rng = np.random.default_rng(seed)
    if source is None:
        pool = _image_paths(dataset, train_idx, "train")
        what = "training split"
    else:
        source = Path(source)
        if not source.is_dir():
            raise ExportError(f"calibration data folder {source} does not exist")
        if (source / "pairs.jsonl").is_file():
            cal = Dataset.load(source)
            pool = [cal.image_path(i) for i in cal.with_images()]
        else:
            pool = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        what = f"folder {source.name}"
        if not pool:
            raise ExportError(f"no images found in calibration data folder {source}")
    chosen = sorted(rng.permutation(len(pool))[:count])
    return [pool[i] for i in chosen], what


# ------------------------------------------------------------------------------------------- quantising
class _PixelReader:
    """onnxruntime CalibrationDataReader over image files (decoded with the shared preprocessing)."""

    def __init__(self, paths, size, batch_size):
        self._batches = iter([paths[i:i + batch_size] for i in range(0, len(paths), batch_size)])
        self.size = size

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": load_batch(batch, self.size)}

    def rewind(self):  # not needed by a single calibration pass
        raise NotImplementedError


def _pixel_path_nodes(model) -> list:
    """The nodes between the graph input and the first convolution: the backbone's layout change, cast
    and normalisation of the pixels."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, todo = {}, [model.graph.input[0].name]
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.op_type != "Conv" and node.name not in found:
                found[node.name] = node
                todo.extend(node.output)
    return list(found.values())


def _scalarize_uniform_constants(model, nodes) -> int:
    """On the pixel path, replace elementwise constants whose entries are all equal (EfficientNet-Lite's
    mean 127 / std 128 on every channel) by scalars: the same arithmetic, but onnxruntime lays int8
    convolutions out channels-last and broadcasts a (1, 1, 1, 3) constant over an image ~25x slower than
    a scalar (4 ms vs 0.15 ms per 224-px image, measured) — a fifth of the int8 encoder's time."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    changed = 0
    for node in nodes:
        if node.op_type not in ("Mul", "Add", "Sub", "Div"):
            continue
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            value = numpy_helper.to_array(inits[name])
            if value.size > 1 and np.all(value == value.flat[0]):
                scalar = numpy_helper.from_array(np.array(value.flat[0], dtype=value.dtype), f"{name}_scalar")
                model.graph.initializer.append(scalar)
                node.input[k] = scalar.name
                changed += 1
    used = {name for node in model.graph.node for name in node.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return changed


def _feed_pixels_as_quantized(model) -> bool:
    """When the pixel normalisation is ``x * a + b`` with scalars and ``-b / a`` a whole number z in 0..255
    (EfficientNet-Lite: (x - 127) / 128), it *is* a dequantisation of the uint8 pixels with scale a and
    zero point z. Then feed the pixels straight into the first convolution's DequantizeLinear and drop
    Cast → Mul → Add → QuantizeLinear: lossless, and ~10% less int8 time (no float pass over the image).
    Returns whether the graph had that form."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scalar(name):
        value = inits.get(name)
        return float(value) if value is not None and value.size == 1 else None

    for quant in graph.node:
        add = producer.get(quant.input[0]) if quant.op_type == "QuantizeLinear" else None
        mul = producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
        cast = producer.get(mul.input[0]) if mul is not None and mul.op_type == "Mul" else None
        if cast is None or cast.op_type != "Cast":
            continue
        a, b = scalar(mul.input[1]), scalar(add.input[1])
        if not a or b is None:
            return False
        z = -b / a
        if abs(z - round(z)) > 1e-3 or not 0 <= round(z) <= 255:
            return False
        dequants = consumers.get(quant.output[0], [])
        private = all(consumers.get(node.output[0]) == [user] for node, user in ((cast, mul), (mul, add), (add, quant)))
        if not private or not dequants or any(n.op_type != "DequantizeLinear" for n in dequants):
            return False
        graph.initializer.extend([numpy_helper.from_array(np.array(a, np.float32), "pixels_scale"),
                                  numpy_helper.from_array(np.array(round(z), np.uint8), "pixels_zero_point")])
        for dq in dequants:
            dq.input[:] = [cast.input[0], "pixels_scale", "pixels_zero_point"]
        for node in (quant, add, mul, cast):
            graph.node.remove(node)
        used = {name for node in graph.node for name in node.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
        return True
    return False


def quantize_image_graph(fp32_path: Path, out_path: Path, paths: list[Path], size: int, work: Path,
                         per_channel: bool = True, method: str = "minmax", batch_size: int = 16) -> dict:
    """Static int8 QDQ quantisation (uint8 activations, int8 weights) calibrated on real images.

    The pixel normalisation in front of the first convolution stays fp32 (it is exact and cheap there);
    quantisation starts at the first convolution's input. Per-channel weights: with per-tensor ones the
    depthwise convolutions of EfficientNet lose most of their precision (cosine to fp32 ~0.8 vs ~0.99)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r}; choose {', '.join(methods)}")
    prepared = work / "image_encoder.prep.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    model = onnx.load(str(prepared))
    front = _pixel_path_nodes(model)
    _scalarize_uniform_constants(model, front)
    onnx.save(model, str(prepared))
    quantize_static(str(prepared), str(out_path), _PixelReader(paths, size, batch_size),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=per_channel, calibrate_method=methods[method],
                    nodes_to_exclude=[node.name for node in front],
                    extra_options={"CalibTensorRangeSymmetric": False})
    quantized = onnx.load(str(out_path))
    pixels_direct = _feed_pixels_as_quantized(quantized)
    if pixels_direct:
        onnx.save(quantized, str(out_path))
    return {"method": "static", "format": "QDQ", "activations": "uint8", "weights": "int8",
            "per_channel": per_channel, "calibration_method": method, "calibration_images": len(paths),
            "first_conv_input": "uint8 pixels as they are (the normalisation is their dequantisation)"
            if pixels_direct else "normalised in fp32, then quantised"}


# ------------------------------------------------------------------------------------------- evaluation
def _run(session, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    emb, scores = session.run(list(OUTPUTS), {name: x})
    return emb, scores


def encode_images(paths, size: int, sessions: dict, batch_size: int = 32, on_batch=None) -> dict:
    """Decode each batch once and run every session on it; ``on_batch(start, pixels)`` sees the pixels too."""
    out = {key: ([], []) for key in sessions}
    for start in range(0, len(paths), batch_size):
        pixels = load_batch(paths[start:start + batch_size], size)
        for key, session in sessions.items():
            emb, scores = _run(session, "pixels", pixels)
            out[key][0].append(emb)
            out[key][1].append(scores)
        if on_batch is not None:
            on_batch(start, pixels)
    return {key: (np.concatenate(e), np.concatenate(s)) for key, (e, s) in out.items()}


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if len(a) else 0.0


def _cosines(a, b) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def _thresholds(scores, labels) -> dict:
    """Per-label F1-maximising thresholds; a label without a validation positive gets null (never predicted)."""
    values, f1 = calibrate_thresholds(scores, labels)
    return {"values": [float(x) if np.isfinite(x) else None for x in values],
            "f1": [round(float(x), 6) for x in f1],
            "split": "val", "scores": "image_encoder.label_scores"}


def _maps(image_emb, text_emb, labels) -> dict:
    return {k: round(float(v), 6) for k, v in cross_modal_map(image_emb, text_emb, labels).items()}


# --------------------------------------------------------------------------------------------- reopening
def verify_bundle(path: Path, images: list, bow: np.ndarray, expected: dict, tol: float = 1e-5,
                  threads: int = 2) -> None:
    """Open the finished bundle from disk with the runtime loader (which verifies digests, format and
    dimensions) and check that it answers like the graphs the metrics were measured with: ``expected``
    holds the raw image / text embeddings of ``images`` (paths) and ``bow``."""
    model = load(path, providers="cpu", threads=threads)
    got = {"image": model.encode_images(images), "text": model.encode_bow(bow)}
    for key in ("image", "text"):
        diff = _max_abs(l2_normalize(got[key]), l2_normalize(expected[key]))
        if not diff <= tol:
            raise ExportError(f"bundle {path} re-opened from disk answers differently "
                              f"({key} embeddings differ by {diff:.3g})")


# ------------------------------------------------------------------------------------------------ export
def export_bundle(model: nn.Module, backbone: nn.Module, config: dict, dataset: Dataset, splits, out,
                  *, opset: int = 17, quantize: str | None = None, calibration_data=None,
                  calibration_size: int = 256, calibration_method: str = "minmax", per_channel: bool = True,
                  archive: bool = False, force: bool = False, run_metrics: dict | None = None,
                  parity_samples: int = 256, parity_tol: float = 1e-4, min_int8_cosine: float = 0.98,
                  batch_size: int = 32, threads: int = 2, log: Log | None = None) -> Path:
    """Export ``model`` (+ ``backbone``) to the bundle ``out`` (a directory, or a ``.dagnn`` archive when
    ``out`` ends with it; ``archive=True`` writes ``out.dagnn`` beside the directory as well).

    ``splits``: a ``Splits`` or the run's splits.json dict (rows). Validation pairs serve parity and
    threshold calibration, test pairs the reported mAP. Returns the path written (the directory, or the
    archive for a ``.dagnn`` target)."""
    log = log or (lambda msg: None)
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantisation {quantize!r}; only int8 is supported")
    out = Path(out).absolute()
    archive_only = out.suffix == ARCHIVE_SUFFIX
    archive_path = out if archive_only else (out.with_name(out.name + ARCHIVE_SUFFIX) if archive else None)
    for target in filter(None, (None if archive_only else out, archive_path)):
        if target.exists() and not force:
            raise ExportError(f"{target} already exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise ExportError(f"output folder {out.parent} does not exist")

    model.eval()
    backbone.eval()
    idx = split_indices(dataset, splits)
    for name in ("val", "test"):
        if len(idx[name]) == 0:
            raise ExportError(f"the {name} split is empty")
    size = int(getattr(backbone, "image_size", config.get("image_size") or 224))
    with torch.no_grad():
        z = model.classifiers().detach().float().cpu()
    n_labels, vocab_size = len(dataset.labels), len(dataset.vocab)
    if z.ndim != 2 or z.shape[0] != n_labels:
        raise ExportError(f"model.classifiers() has shape {tuple(z.shape)}, expected ({n_labels}, d) "
                          f"for the {n_labels} labels of {dataset.root}")
    z_unit = F.normalize(z, dim=1, eps=1e-12)
    image_enc, text_enc = ImageEncoder(backbone, model, z_unit).eval(), TextEncoder(model, z_unit).eval()

    tmp = temp_dir_beside(out)
    try:
        bundle = tmp / "bundle"
        work = tmp / "work"
        bundle.mkdir()
        work.mkdir()
        t0 = time.time()
        # 1. graphs, classifiers, vocabulary
        fp32_image = (work if quantize else bundle) / IMAGE_GRAPH
        example_pixels = torch.from_numpy(load_batch(_image_paths(dataset, idx["val"][:2], "val"), size))
        _export_onnx(image_enc, example_pixels, "pixels", fp32_image, opset)
        _export_onnx(text_enc, torch.from_numpy(dataset.bow(idx["val"][:2])), "bow", bundle / TEXT_GRAPH, opset)
        np.save(bundle / CLASSIFIERS, z.numpy().astype(np.float32), allow_pickle=False)
        (bundle / VOCAB).write_text("\n".join(dataset.vocab) + "\n", encoding="utf-8")
        quant_info = None
        if quantize:
            cal_paths, cal_what = calibration_images(calibration_data, dataset, idx["train"], calibration_size)
            log(f"quantising the image graph (int8, calibrated on {len(cal_paths)} images of the {cal_what})")
            quant_info = quantize_image_graph(fp32_image, bundle / IMAGE_GRAPH, cal_paths, size, work,
                                              per_channel=per_channel, method=calibration_method)
            quant_info["calibration_source"] = cal_what
        for graph in (IMAGE_GRAPH, TEXT_GRAPH):
            check_graph(bundle / graph)
        log(f"graphs written and checked ({time.time() - t0:.0f}s)")

        sessions = {"image": ort_session(bundle / IMAGE_GRAPH, threads)}
        if quantize:
            sessions["image_fp32"] = ort_session(fp32_image, threads)
        text_session = ort_session(bundle / TEXT_GRAPH, threads)

        # 2. validation: parity against torch, thresholds from the exported graph's scores
        val_paths = _image_paths(dataset, idx["val"], "val")
        val_bow, val_labels = dataset.bow(idx["val"]), dataset.label_matrix(idx["val"])
        n_par = min(parity_samples, len(val_paths))
        ref = {"v": [], "t": [], "scores_v": [], "scores_t": []}

        def torch_reference(start, pixels):
            if start >= n_par:
                return
            k = min(len(pixels), n_par - start)
            with torch.no_grad():
                h_v = backbone(torch.from_numpy(pixels[:k]))
                res = model(h_v, torch.from_numpy(val_bow[start:start + k]))
            for key in ref:
                ref[key].append(res[key].float().numpy())

        val = encode_images(val_paths, size, sessions, batch_size, on_batch=torch_reference)
        ref = {key: np.concatenate(parts) for key, parts in ref.items()}
        val_t, val_t_scores = _run(text_session, "bow", val_bow)
        img_key = "image_fp32" if quantize else "image"
        parity = {"split": "val", "samples": n_par, "tolerance": parity_tol, "max_abs_diff": {
            "image_embedding": _max_abs(val[img_key][0][:n_par], ref["v"]),
            "image_scores": _max_abs(val[img_key][1][:n_par], ref["scores_v"]),
            "text_embedding": _max_abs(val_t[:n_par], ref["t"]),
            "text_scores": _max_abs(val_t_scores[:n_par], ref["scores_t"])}}
        bad = {k: v for k, v in parity["max_abs_diff"].items() if not v <= parity_tol}
        if bad:
            raise ExportError("onnxruntime and torch disagree on validation inputs (max abs diff "
                              + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()) + f" > {parity_tol:g})")
        if quantize:
            cos = _cosines(val["image"][0], val["image_fp32"][0])
            parity["int8_vs_fp32"] = {"image_embedding_cosine_mean": round(float(cos.mean()), 6),
                                      "image_embedding_cosine_min": round(float(cos.min()), 6),
                                      "image_scores_max_abs_diff": _max_abs(val["image"][1], val["image_fp32"][1]),
                                      "samples": len(cos)}
            if not cos.mean() >= min_int8_cosine:
                raise ExportError(f"int8 image embeddings drift from fp32: mean cosine {cos.mean():.4f} "
                                  f"< {min_int8_cosine} on the validation split")
        thresholds = _thresholds(val["image"][1], val_labels)
        log(f"parity and thresholds on {len(val_paths)} validation pairs ({time.time() - t0:.0f}s)")

        # 3. test: mAP and tagging of the exported graphs
        test_paths = _image_paths(dataset, idx["test"], "test")
        test_labels = dataset.label_matrix(idx["test"])
        test = encode_images(test_paths, size, sessions, batch_size)
        test_t, _ = _run(text_session, "bow", dataset.bow(idx["test"]))
        cut = np.array([np.inf if x is None else x for x in thresholds["values"]], dtype=np.float64)
        tagging = tagging_metrics(test["image"][1], test_labels, cut)
        metrics = {"test": _maps(test["image"][0], test_t, test_labels),
                   "test_tagging": {k: round(float(tagging[k]), 6) for k in ("mean_ap", "CP", "CR", "CF1", "OF1")},
                   "evaluated_with": "onnxruntime on the exported graphs",
                   "split_sizes": {k: int(len(v)) for k, v in idx.items()}}
        if quantize:
            metrics["test_fp32"] = _maps(test["image_fp32"][0], test_t, test_labels)
        if run_metrics:
            metrics["torch_run"] = run_metrics
        log(f"test mAP {metrics['test']} ({time.time() - t0:.0f}s)")

        # 4. manifest, model card, digests
        d = int(z.shape[1])
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": {"name": "DAGNN", "variant": config.get("variant", "dagnn"),
                      "gnn": None if config.get("classifier") == "linear" else config.get("gnn"),
                      "backbone": getattr(backbone, "name", config.get("backbone")),
                      "precision": quantize or "fp32"},
            "labels": list(dataset.labels),
            "vocabulary": {"file": VOCAB, "size": vocab_size},
            "text": {"tokenizer": TEXT_TOKENIZER},
            "preprocessing": {"size": size, "resize": RESIZE_MODE, "layout": "NHWC", "dtype": "uint8",
                              "color": "RGB"},
            "embedding_dim": d,
            "graphs": {
                "image_encoder": {"file": IMAGE_GRAPH, "input": "pixels", "outputs": list(OUTPUTS),
                                  "input_shape": ["N", size, size, 3], "input_dtype": "uint8",
                                  "output_shapes": {"embedding": ["N", d], "label_scores": ["N", n_labels]},
                                  "opset": opset, "precision": quantize or "fp32"},
                "text_encoder": {"file": TEXT_GRAPH, "input": "bow", "outputs": list(OUTPUTS),
                                 "input_shape": ["N", vocab_size], "input_dtype": "float32",
                                 "output_shapes": {"embedding": ["N", d], "label_scores": ["N", n_labels]},
                                 "opset": opset, "precision": "fp32"},
            },
            "classifiers": {"file": CLASSIFIERS, "shape": [n_labels, d]},
            "thresholds": thresholds,
            "config": config,
            "metrics": metrics,
            "parity": parity,
        }
        if quant_info:
            manifest["quantization"] = quant_info
        files = {name: file_sha256(bundle / name) for name in (IMAGE_GRAPH, TEXT_GRAPH, CLASSIFIERS, VOCAB)}
        manifest["embedding_space"] = embedding_space(files)
        (bundle / CARD).write_text(render_model_card(manifest), encoding="utf-8")
        files[CARD] = file_sha256(bundle / CARD)
        manifest["files"] = files
        manifest["embedding_space"] = manifest.pop("embedding_space")  # keep the doc's key order
        manifest[DIGEST_FIELD] = bundle_digest(manifest, default=_json_default)  # lets load() detect edits
        _write_json(bundle / MANIFEST, manifest)

        # 5. re-open from disk and smoke-query, then move into place
        k = min(4, len(val_paths))
        probe = (val_paths[:k], val_bow[:k], {"image": val["image"][0][:k], "text": val_t[:k]})
        shutil.rmtree(work)
        verify_bundle(bundle, *probe, threads=threads)
        written = None
        if archive_path is not None:
            written = write_archive(bundle, archive_path, force=force,
                                    check=lambda p: verify_bundle(p, *probe, threads=threads))
        if not archive_only:
            _refuse_existing(out, force)
            replace_dir(bundle, out)
            written = out
        log(f"bundle verified with dagnn_runtime.load: {written}")
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarize_run_metrics(metrics: dict) -> dict:
    """The retrieval figures of a run's metrics.json (torch, cached features), for comparison in the manifest."""
    keep = lambda m: {k: m[k] for k in ("i2t", "t2i", "avg") if k in m}  # noqa: E731
    out = {"source": "metrics.json of the training run (torch, cached features)"}
    if isinstance(metrics.get("test"), dict):
        out["test"] = keep(metrics["test"])
    elif metrics.get("split") == "test":
        out["test"] = keep(metrics)
    if isinstance(metrics.get("val"), dict):
        out["val"] = keep(metrics["val"])
    for key in ("selected_epoch", "variant", "seed"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def export_run(run_dir, out, *, data=None, log: Log | None = None, **kwargs) -> Path:
    """Export a training run directory (``dagnn train --out RUN/``). ``data`` overrides the data set folder
    recorded in the run's config (when the data moved)."""
    from .backbones import build_backbone
    from .train import load_run

    run_dir = Path(run_dir)
    model, config = load_run(run_dir)
    data = Path(data) if data is not None else (Path(config["data"]) if config.get("data") else None)
    if data is None:
        raise ExportError(f"{run_dir / 'config.json'} records no data set folder; pass --data DIR")
    dataset = Dataset.load(data)
    for fname, expected in (("labels.txt", dataset.labels), ("vocab.txt", dataset.vocab)):
        path = run_dir / fname
        if path.is_file():
            lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
            if lines != list(expected):
                raise ExportError(f"{path} differs from the data set {data} ({fname}); wrong --data?")
    splits_path = run_dir / "splits.json"
    if not splits_path.is_file():
        raise ExportError(f"missing file {splits_path}")
    splits = json.loads(splits_path.read_text())
    metrics_path = run_dir / "metrics.json"
    run_metrics = summarize_run_metrics(json.loads(metrics_path.read_text())) if metrics_path.is_file() else None
    if not config.get("backbone"):
        raise ExportError(f"{run_dir / 'config.json'} records no backbone")
    backbone = build_backbone(config["backbone"], config.get("backbone_weights"))
    if config.get("feature_dim") and backbone.feature_dim != config["feature_dim"]:
        raise ExportError(f"backbone {config['backbone']} gives {backbone.feature_dim}-d features but the run "
                          f"was trained on {config['feature_dim']}-d ones")
    return export_bundle(model, backbone, config, dataset, splits, out, run_metrics=run_metrics, log=log, **kwargs)
