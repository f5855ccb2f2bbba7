"""Checking exported graphs with onnxruntime: what the bundle will answer, measured before it is written.

Parity against torch on validation pairs, thresholds calibrated on the exported graph's own scores, test
mAP of the exported graphs, and the finished bundle re-opened with the runtime loader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dagnn_runtime import load
from dagnn_runtime.dataset import Dataset, Splits
from dagnn_runtime.metrics import (calibrate_thresholds, cross_modal_map, l2_normalize, tagging_metrics,
                                   thresholds_from_json, thresholds_to_json)
from dagnn_runtime.preprocess import load_batch
from dagnn_runtime.text_ids import tag_id_batches

from .errors import ExportError
from .onnx_graphs import OUTPUTS


# ------------------------------------------------------------------------------------------------ inputs
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


def image_paths(dataset: Dataset, idx: np.ndarray, split: str) -> list[Path]:
    paths = [dataset.image_path(i) for i in idx]
    no_image = [dataset.pairs[i].row for i, p in zip(idx, paths) if p is None]
    if no_image:
        raise ExportError(f"{split} rows without an image, e.g. {no_image[:5]}")
    return paths


# --------------------------------------------------------------------------------------------- running
def ort_session(path: Path, threads: int = 2, config: dict | None = None):
    """A CPU session as the runtime builds it, with the session config entries the bundle will record."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_graph(session, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, label_scores) of one graph on one batch."""
    emb, scores = session.run(list(OUTPUTS), {name: x})
    return emb, scores


def run_text_graph(session, bow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, label_scores) of the tag-id text graph for a 0/1 bag of words, in chunks as the runtime
    runs it."""
    emb = np.empty((len(bow), session.get_outputs()[0].shape[1]), dtype=np.float32)
    scores = np.empty((len(bow), session.get_outputs()[1].shape[1]), dtype=np.float32)
    for rows, chunk in tag_id_batches([np.flatnonzero(row) for row in bow], bow.shape[1]):
        emb[rows], scores[rows] = run_graph(session, "tags", chunk)
    return emb, scores


def encode_image_paths_ort(paths, size: int, sessions: dict, batch_size: int = 32, on_batch=None) -> dict:
    """Decode each batch of image files once and run every image session on it; ``on_batch(start,
    pixels)`` sees the pixels too. Returns {session key: (embeddings, label scores)}."""
    out = {key: ([], []) for key in sessions}
    for start in range(0, len(paths), batch_size):
        pixels = load_batch(paths[start:start + batch_size], size)
        for key, session in sessions.items():
            emb, scores = run_graph(session, "pixels", pixels)
            out[key][0].append(emb)
            out[key][1].append(scores)
        if on_batch is not None:
            on_batch(start, pixels)
    return {key: (np.concatenate(e), np.concatenate(s)) for key, (e, s) in out.items()}


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if len(a) else 0.0


def cosines(a, b) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def rounded_maps(image_emb, text_emb, labels) -> dict:
    return {k: round(float(v), 6) for k, v in cross_modal_map(image_emb, text_emb, labels).items()}


# -------------------------------------------------------------------------------------------- checking
def torch_outputs(model, backbone, pixels: np.ndarray, bow: np.ndarray, mirror: bool = False) -> dict:
    """The torch model's v, t and scores of a batch; with ``mirror``, v is the mean of Gv1's output for the
    photos and for their mirror images (flipped here in numpy, apart from the graph's own flip)."""
    with torch.no_grad():
        res = model(backbone(torch.from_numpy(pixels)), torch.from_numpy(bow))
        if mirror:
            flipped = np.ascontiguousarray(pixels[:, :, ::-1])
            res["v"] = (res["v"] + model.image_common(backbone(torch.from_numpy(flipped)))) / 2
            res["scores_v"] = model.scores(res["v"], model.classifiers())
    return res


def check_parity(model, backbone, val_paths, val_bow, size, sessions, text_sessions, *, samples: int, tol: float,
                 min_int8_cosine: float, batch_size: int, mirror: bool = False) -> tuple[dict, dict, tuple]:
    """Run the exported graphs on the validation pairs and compare the first ``samples`` with torch (the
    fp32 graphs; int8 ones by their cosine to those), mirrored as the graph is. Returns (parity record, image
    outputs per session, text outputs of the bundle's text graph); raises ExportError on disagreement."""
    n_par = min(samples, len(val_paths))
    ref = {"v": [], "t": [], "scores_v": [], "scores_t": []}

    def torch_reference(start, pixels):
        if start >= n_par:
            return
        k = min(len(pixels), n_par - start)
        res = torch_outputs(model, backbone, pixels[:k], val_bow[start:start + k], mirror)
        for key in ref:
            ref[key].append(res[key].float().numpy())

    val = encode_image_paths_ort(val_paths, size, sessions, batch_size, on_batch=torch_reference)
    ref = {key: np.concatenate(parts) for key, parts in ref.items()}
    texts = {key: run_text_graph(session, val_bow) for key, session in text_sessions.items()}
    val_t, fp32_t = texts["text"], texts.get("text_fp32", texts["text"])
    img = val["image_fp32" if "image_fp32" in sessions else "image"]
    parity = {"split": "val", "samples": n_par, "tolerance": tol, "max_abs_diff": {
        "image_embedding": max_abs(img[0][:n_par], ref["v"]),
        "image_scores": max_abs(img[1][:n_par], ref["scores_v"]),
        "text_embedding": max_abs(fp32_t[0][:n_par], ref["t"]),
        "text_scores": max_abs(fp32_t[1][:n_par], ref["scores_t"])}}
    bad = {k: v for k, v in parity["max_abs_diff"].items() if not v <= tol}
    if bad:
        raise ExportError("onnxruntime and torch disagree on validation inputs (max abs diff "
                          + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()) + f" > {tol:g})")
    if "image_fp32" in sessions:
        cos = cosines(val["image"][0], val["image_fp32"][0])
        parity["int8_vs_fp32"] = {"image_embedding_cosine_mean": round(float(cos.mean()), 6),
                                  "image_embedding_cosine_min": round(float(cos.min()), 6),
                                  "image_scores_max_abs_diff": max_abs(val["image"][1], val["image_fp32"][1]),
                                  "samples": len(cos)}
        if not cos.mean() >= min_int8_cosine:
            raise ExportError(f"int8 image embeddings drift from fp32: mean cosine {cos.mean():.4f} "
                              f"< {min_int8_cosine} on the validation split")
    if "text_fp32" in texts:
        cos = cosines(val_t[0], fp32_t[0])
        parity.setdefault("int8_vs_fp32", {}).update({"text_embedding_cosine_mean": round(float(cos.mean()), 6),
                                                      "text_embedding_cosine_min": round(float(cos.min()), 6)})
        if not cos.mean() >= min_int8_cosine:
            raise ExportError(f"int8 text embeddings drift from fp32: mean cosine {cos.mean():.4f} "
                              f"< {min_int8_cosine} on the validation split")
    return parity, val, val_t


def calibrated_thresholds(scores, labels) -> dict:
    """Per-label F1-maximising thresholds; a label without a validation positive gets null (never predicted)."""
    values, f1 = calibrate_thresholds(scores, labels)
    return {"values": thresholds_to_json(values), "f1": [round(float(x), 6) for x in f1],
            "split": "val", "scores": "image_encoder.label_scores"}


def exported_test_metrics(test_paths, test_bow, test_labels, size, sessions, text_sessions, thresholds: dict,
                          split_sizes: dict, batch_size: int) -> dict:
    """Test mAP and tagging metrics of the exported graphs (and of the fp32 image graph beside an int8 one)."""
    test = encode_image_paths_ort(test_paths, size, sessions, batch_size)
    test_t, _ = run_text_graph(text_sessions["text"], test_bow)
    tagging = tagging_metrics(test["image"][1], test_labels, thresholds_from_json(thresholds["values"]))
    metrics = {"test": rounded_maps(test["image"][0], test_t, test_labels),
               "test_tagging": {k: round(float(tagging[k]), 6) for k in ("mean_ap", "CP", "CR", "CF1", "OF1")},
               "evaluated_with": "onnxruntime on the exported graphs", "split_sizes": split_sizes}
    if "image_fp32" in sessions:
        metrics["test_fp32"] = rounded_maps(test["image_fp32"][0], test_t, test_labels)
    return metrics


def verify_bundle(path: Path, images: list, bow: np.ndarray, expected: dict, tol: float = 1e-5,
                  threads: int = 2) -> None:
    """Open the finished bundle from disk with the runtime loader (which verifies digests, format and
    dimensions) and check that it answers like the graphs the metrics were measured with: ``expected``
    holds the raw image / text embeddings of ``images`` (paths) and ``bow``."""
    model = load(path, providers="cpu", threads=threads)
    got = {"image": model.encode_images(images), "text": model.encode_bow(bow)}
    for key in ("image", "text"):
        diff = max_abs(l2_normalize(got[key]), l2_normalize(expected[key]))
        if not diff <= tol:
            raise ExportError(f"bundle {path} re-opened from disk answers differently "
                              f"({key} embeddings differ by {diff:.3g})")
