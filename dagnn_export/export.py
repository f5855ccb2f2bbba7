"""Export a trained DAGNN to a bundle (see docs/bundle-format.md): two ONNX graphs, the classifiers Z,
the vocabulary, a manifest and a model card.

The label classifiers Z are produced ONCE here by running the GNN (``model.classifiers()``) and folded as
a constant into both graphs' ``label_scores``; serving never runs the GNN. Everything is written into a
temporary directory beside the target and only renamed into place after every check passed:

- ``onnx.checker`` on both graphs;
- parity onnxruntime vs torch on real validation pairs (fp32: max abs diff of embeddings and scores
  within ``parity_tol``; int8: cosine of the int8 image embeddings to the fp32 ones);
- thresholds calibrated and mAP measured with the exported graphs themselves (validation / test split);
- the finished bundle re-opened from disk with the runtime loader and queried, after the graphs' weights
  moved to their ``.data`` files (``graph_weights``).

A failed export therefore leaves nothing at the target. The steps live in ``onnx_graphs`` (graphs),
``quantize`` (int8), ``verify`` (onnxruntime checks) and ``manifest`` (manifest, card, archive); this
module runs them in order.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dagnn_runtime.atomic import replace_dir, temp_dir_beside
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.preprocess import load_batch

from .errors import ExportError
from .files import read_json
from .graph_weights import move_weights_out
from .manifest import (ARCHIVE_SUFFIX, CLASSIFIERS, IMAGE_GRAPH, TEXT_GRAPH, VOCAB, build_manifest, refuse_existing,
                       write_archive, write_manifest)
from .onnx_graphs import ImageEncoder, TextEncoder, check_graph, export_onnx, macs_per_photo, tag_id_matrix
from .quantize import INT8_CONFIGS, calibration_images, choose_int8_config, session_for
from .quantize_text import quantize_text_graph
from .verify import (calibrated_thresholds, check_parity, exported_test_metrics, image_paths, ort_session,
                     split_indices, verify_bundle)

Log = Callable[[str], None]


@dataclass
class _Job:
    """What every step of one export reads."""
    model: nn.Module
    backbone: nn.Module
    dataset: Dataset
    idx: dict
    size: int
    z: torch.Tensor
    quantize: str | None
    threads: int
    batch_size: int
    log: Log
    mirror: bool = False


def _targets(out, archive: bool, force: bool) -> tuple[Path, bool, Path | None]:
    """(folder target, whether only the archive is written, archive path or None); refuses what exists."""
    out = Path(out).absolute()
    archive_only = out.suffix == ARCHIVE_SUFFIX
    archive_path = out if archive_only else (out.with_name(out.name + ARCHIVE_SUFFIX) if archive else None)
    for target in filter(None, (None if archive_only else out, archive_path)):
        refuse_existing(target, force)
    if not out.parent.is_dir():
        raise ExportError(f"output folder {out.parent} does not exist")
    return out, archive_only, archive_path


def _classifiers(model: nn.Module, dataset: Dataset) -> torch.Tensor:
    """Z, run once through the GNN; its shape checked against the data set's labels."""
    with torch.no_grad():
        z = model.classifiers().detach().float().cpu()
    n_labels = len(dataset.labels)
    if z.ndim != 2 or z.shape[0] != n_labels:
        raise ExportError(f"model.classifiers() has shape {tuple(z.shape)}, expected ({n_labels}, d) "
                          f"for the {n_labels} labels of {dataset.root}")
    return z


def write_graphs(job: _Job, bundle: Path, work: Path, opset: int) -> tuple[Path, Path, dict | None, int]:
    """Step 1: the fp32 graphs (into ``work`` when quantising: the bundle gets int8 ones), the int8 text graph
    when asked, the classifiers and the vocabulary. Returns the fp32 image and text graphs' paths, the text
    graph's quantisation record and the image graph's multiply-accumulates per photo."""
    z_unit = F.normalize(job.z, dim=1, eps=1e-12)
    fp32_image = (work if job.quantize else bundle) / IMAGE_GRAPH
    fp32_text = (work if job.quantize else bundle) / TEXT_GRAPH
    example = torch.from_numpy(load_batch(image_paths(job.dataset, job.idx["val"][:2], "val"), job.size))
    encoder = ImageEncoder(job.backbone, job.model, z_unit, job.mirror).eval()
    export_onnx(encoder, example, "pixels", fp32_image, opset)
    tags = torch.from_numpy(tag_id_matrix(job.dataset.bow(job.idx["val"][:2])))
    export_onnx(TextEncoder(job.model, z_unit).eval(), tags, "tags", fp32_text, opset, input_axes={0: "N", 1: "L"})
    np.save(bundle / CLASSIFIERS, job.z.numpy().astype(np.float32), allow_pickle=False)
    (bundle / VOCAB).write_text("\n".join(job.dataset.vocab) + "\n", encoding="utf-8")
    text_quant = None
    if job.quantize:
        text_quant = quantize_text_graph(fp32_text, bundle / TEXT_GRAPH, work, job.dataset.bow(job.idx["train"][:4096]))
    return fp32_image, fp32_text, text_quant, macs_per_photo(encoder, job.size)


def quantize_image(job: _Job, fp32_image: Path, bundle: Path, work: Path, *, calibration_data, calibration_size: int,
                   calibration_method: str, per_channel: bool, min_int8_cosine: float, int8_configs) -> dict:
    """Step 1b (int8): the int8 image graph of the first configuration that holds on the validation images."""
    cal_paths, cal_what = calibration_images(calibration_data, job.dataset, job.idx["train"], calibration_size)
    job.log(f"quantising the image graph (int8, calibrated on {len(cal_paths)} images of the {cal_what})")
    quant_info = choose_int8_config(fp32_image, bundle / IMAGE_GRAPH, cal_paths,
                                    image_paths(job.dataset, job.idx["val"], "val"), job.size, work,
                                    min_cosine=min_int8_cosine, per_channel=per_channel, method=calibration_method,
                                    threads=job.threads, batch_size=job.batch_size, configs=int8_configs)
    quant_info["calibration_source"] = cal_what
    return quant_info


def validate(job: _Job, sessions: dict, text_sessions: dict, *, parity_samples: int, parity_tol: float,
             min_int8_cosine: float) -> tuple[dict, dict, tuple]:
    """Step 2: parity against torch and thresholds from the exported graph's scores, on validation pairs.
    Returns (parity, thresholds, probe) where probe feeds the final re-open check."""
    val_paths = image_paths(job.dataset, job.idx["val"], "val")
    val_bow, val_labels = job.dataset.bow(job.idx["val"]), job.dataset.label_matrix(job.idx["val"])
    parity, val, val_t = check_parity(job.model, job.backbone, val_paths, val_bow, job.size, sessions, text_sessions,
                                      samples=parity_samples, tol=parity_tol, min_int8_cosine=min_int8_cosine,
                                      batch_size=job.batch_size, mirror=job.mirror)
    thresholds = calibrated_thresholds(val["image"][1], val_labels)
    k = min(4, len(val_paths))
    probe = (val_paths[:k], val_bow[:k], {"image": val["image"][0][:k], "text": val_t[0][:k]})
    return parity, thresholds, probe


def measure_test(job: _Job, sessions: dict, text_sessions: dict, thresholds: dict) -> dict:
    """Step 3: test mAP and tagging of the exported graphs."""
    idx = job.idx["test"]
    return exported_test_metrics(image_paths(job.dataset, idx, "test"), job.dataset.bow(idx),
                                 job.dataset.label_matrix(idx), job.size, sessions, text_sessions, thresholds,
                                 {k: int(len(v)) for k, v in job.idx.items()}, job.batch_size)


def put_in_place(bundle: Path, probe: tuple, out: Path, archive_only: bool, archive_path: Path | None,
                 force: bool, threads: int) -> Path:
    """Step 5: re-open the finished bundle from disk, then move it (and/or its archive) into place."""
    verify_bundle(bundle, *probe, threads=threads)
    written = None
    if archive_path is not None:
        written = write_archive(bundle, archive_path, force=force,
                                check=lambda p: verify_bundle(p, *probe, threads=threads))
    if not archive_only:
        refuse_existing(out, force)
        replace_dir(bundle, out)
        written = out
    return written


def export_bundle(model: nn.Module, backbone: nn.Module, config: dict, dataset: Dataset, splits, out,
                  *, opset: int = 17, quantize: str | None = None, calibration_data=None,
                  calibration_size: int = 256, calibration_method: str = "minmax", per_channel: bool = True,
                  archive: bool = False, force: bool = False, run_metrics: dict | None = None, mirror: bool = False,
                  parity_samples: int = 256, parity_tol: float = 1e-4, min_int8_cosine: float = 0.99,
                  batch_size: int = 32, threads: int = 2, int8_configs=INT8_CONFIGS, log: Log | None = None) -> Path:
    """Export ``model`` (+ ``backbone``) to the bundle ``out`` (a directory, or a ``.dagnn`` archive when
    ``out`` ends with it; ``archive=True`` writes ``out.dagnn`` beside the directory as well).

    ``splits``: a ``Splits`` or the run's splits.json dict (rows). Validation pairs serve parity and
    threshold calibration, test pairs the reported mAP. Returns the path written (the directory, or the
    archive for a ``.dagnn`` target). ``int8_configs``: the int8 configurations to try, in order
    (``quantize.INT8_CONFIGS``); the first whose validation cosine reaches ``min_int8_cosine`` is recorded in
    the manifest with its quantiser options and session settings, and none reaching it refuses the export.
    ``mirror``: the image graph embeds a photo as the mean over it and its mirror image (``ImageEncoder``);
    parity, thresholds and test metrics are measured through it."""
    log = log or (lambda msg: None)
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantisation {quantize!r}; only int8 is supported")
    out, archive_only, archive_path = _targets(out, archive, force)
    model.eval()
    backbone.eval()
    idx = split_indices(dataset, splits)
    for name in ("val", "test"):
        if len(idx[name]) == 0:
            raise ExportError(f"the {name} split is empty")
    size = int(getattr(backbone, "image_size", config.get("image_size") or 224))
    job = _Job(model, backbone, dataset, idx, size, _classifiers(model, dataset), quantize, threads, batch_size, log,
               mirror)

    tmp = temp_dir_beside(out)
    try:
        bundle, work = tmp / "bundle", tmp / "work"
        bundle.mkdir()
        work.mkdir()
        t0 = time.time()
        fp32_image, fp32_text, text_quant, macs = write_graphs(job, bundle, work, opset)
        quant_info, image_config = None, {}
        if quantize:
            quant_info = quantize_image(job, fp32_image, bundle, work, calibration_data=calibration_data,
                                        calibration_size=calibration_size, calibration_method=calibration_method,
                                        per_channel=per_channel, min_int8_cosine=min_int8_cosine,
                                        int8_configs=int8_configs)
            quant_info["text_encoder"] = text_quant
            image_config = session_for(quant_info["int8_config"]["kernels"])
            log(f"int8 image graph: {quant_info['int8_config']['chosen']} ({time.time() - t0:.0f}s)")
        for graph in (IMAGE_GRAPH, TEXT_GRAPH):
            check_graph(bundle / graph)
        log(f"graphs written and checked ({time.time() - t0:.0f}s)")
        sessions = {"image": ort_session(bundle / IMAGE_GRAPH, threads, image_config)}
        if quantize:
            sessions["image_fp32"] = ort_session(fp32_image, threads)
        text_sessions = {"text": ort_session(bundle / TEXT_GRAPH, threads)}
        if quantize:
            text_sessions["text_fp32"] = ort_session(fp32_text, threads)
        parity, thresholds, probe = validate(job, sessions, text_sessions, parity_samples=parity_samples,
                                             parity_tol=parity_tol, min_int8_cosine=min_int8_cosine)
        log(f"parity and thresholds on {len(idx['val'])} validation pairs ({time.time() - t0:.0f}s)")

        metrics = measure_test(job, sessions, text_sessions, thresholds)
        if run_metrics:
            metrics["torch_run"] = run_metrics
        log(f"test mAP {metrics['test']} ({time.time() - t0:.0f}s)")

        # step 3b: the checked graphs' weights into .data files (format 3), then checked again as written
        weights = {"image_encoder": move_weights_out(bundle / IMAGE_GRAPH),
                   "text_encoder": move_weights_out(bundle / TEXT_GRAPH)}
        for graph in (IMAGE_GRAPH, TEXT_GRAPH):
            check_graph(bundle / graph)

        # step 4: manifest, model card, digests
        manifest = build_manifest(config=config, backbone_name=getattr(backbone, "name", config.get("backbone")),
                                  labels=dataset.labels, vocab_size=len(dataset.vocab), size=size,
                                  dim=int(job.z.shape[1]), opset=opset, quantize=quantize, thresholds=thresholds,
                                  metrics=metrics, parity=parity, quant_info=quant_info, weights=weights,
                                  mirror=mirror, macs=macs)
        write_manifest(bundle, manifest)

        shutil.rmtree(work)
        written = put_in_place(bundle, probe, out, archive_only, archive_path, force, threads)
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
    from .backbones import backbone_of_run
    from .run import load_run

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
    splits = read_json(splits_path, ExportError)
    metrics_path = run_dir / "metrics.json"
    run_metrics = summarize_run_metrics(read_json(metrics_path, ExportError)) if metrics_path.is_file() else None
    if not config.get("backbone"):
        raise ExportError(f"{run_dir / 'config.json'} records no backbone")
    if config.get("trunk_blocks"):  # fine-tuned: the frozen trunk, then the run's own head
        from .backbone_split import export_trunk

        backbone = export_trunk(config)
    else:
        backbone = backbone_of_run(config)
    if config.get("feature_dim") and backbone.feature_dim != config["feature_dim"]:
        raise ExportError(f"backbone {config['backbone']} gives {backbone.feature_dim}-d features but the run "
                          f"was trained on {config['feature_dim']}-d ones")
    return export_bundle(model, backbone, config, dataset, splits, out, run_metrics=run_metrics, log=log, **kwargs)
