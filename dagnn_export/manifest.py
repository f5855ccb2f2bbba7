"""The bundle's files beside the graphs: manifest (docs/bundle-format.md), model card, digests, and the
``.dagnn`` archive of a finished bundle folder."""
from __future__ import annotations

import zipfile
from datetime import datetime, timezone
from pathlib import Path

from dagnn_runtime.atomic import atomic_write
from dagnn_runtime.bundle import FORMAT, MANIFEST
from dagnn_runtime.digests import DIGEST_FIELD, bundle_digest, embedding_space_id, file_sha256
from dagnn_runtime.preprocess import RESIZE_MODE

from .errors import ExportError
from .files import json_default, write_json
from .graph_weights import weights_files
from .model_card import render_model_card
from .onnx_graphs import OUTPUTS

FORMAT_VERSION = 3  # 2: the text graph takes tag ids; 3: graph weights in .data files (docs/bundle-format.md)
IMAGE_GRAPH, TEXT_GRAPH, CLASSIFIERS, VOCAB, CARD = (
    "image_encoder.onnx", "text_encoder.onnx", "classifiers.npy", "vocab.txt", "MODEL_CARD.md")
ARCHIVE_SUFFIX = ".dagnn"
TEXT_TOKENIZER = "lowercase, split on commas/semicolons/whitespace"


def embedding_space(files: dict, manifest: dict) -> str:
    """The id of the space the embeddings live in, computed exactly as the runtime checks it."""
    return embedding_space_id(files, (IMAGE_GRAPH, TEXT_GRAPH, *weights_files(manifest)), CLASSIFIERS)


def build_manifest(*, config: dict, backbone_name: str, labels: list, vocab_size: int, size: int, dim: int,
                   opset: int, quantize: str | None, thresholds: dict, metrics: dict, parity: dict,
                   quant_info: dict | None, weights: dict, mirror: bool = False, macs: int | None = None) -> dict:
    """Everything the manifest says except the digests (added by ``write_manifest``). ``weights``: per graph
    its weights-file entry (``graph_weights.move_weights_out``) or None. ``mirror`` and ``macs`` (per photo,
    both passes counted) describe the image graph's work, so that ``dagnn info`` can state its cost."""
    n_labels = len(labels)
    graph = lambda file, name, shape, dtype, precision: {  # noqa: E731
        "file": file, "input": name, "outputs": list(OUTPUTS), "input_shape": shape, "input_dtype": dtype,
        "output_shapes": {"embedding": ["N", dim], "label_scores": ["N", n_labels]},
        "opset": opset, "precision": precision}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"name": "DAGNN", "variant": config.get("variant", "dagnn"),
                  "gnn": None if config.get("classifier") == "linear" else config.get("gnn"),
                  "backbone": backbone_name, "precision": quantize or "fp32"},
        "labels": list(labels),
        "vocabulary": {"file": VOCAB, "size": vocab_size},
        "text": {"tokenizer": TEXT_TOKENIZER},
        "preprocessing": {"size": size, "resize": RESIZE_MODE, "layout": "NHWC", "dtype": "uint8", "color": "RGB"},
        "embedding_dim": dim,
        "graphs": {
            "image_encoder": graph(IMAGE_GRAPH, "pixels", ["N", size, size, 3], "uint8", quantize or "fp32"),
            "text_encoder": {**graph(TEXT_GRAPH, "tags", ["N", "L"], "int64", quantize or "fp32"),
                             "pad_id": vocab_size},
        },
        "classifiers": {"file": CLASSIFIERS, "shape": [n_labels, dim]},
        "thresholds": thresholds,
        "config": config,
        "metrics": metrics,
        "parity": parity,
    }
    image = manifest["graphs"]["image_encoder"]
    image["mirror"] = bool(mirror)
    if macs is not None:
        image["cost"] = {"backbones": str(backbone_name).split("+"), "input_side": size,
                         "macs_per_photo": int(macs), "passes": 2 if mirror else 1}
    for name, entry in weights.items():
        if entry is not None:
            manifest["graphs"][name]["weights"] = entry
    if quant_info:
        manifest["quantization"] = quant_info
        if "int8_config" in quant_info:  # the runtime chooses kernels that compute what was verified
            manifest["graphs"]["image_encoder"]["int8_kernels"] = quant_info["int8_config"]["kernels"]
    return manifest


def write_manifest(bundle: Path, manifest: dict) -> None:
    """Digest the bundle's files, render the model card, and write manifest.json last."""
    names = (IMAGE_GRAPH, TEXT_GRAPH, *weights_files(manifest), CLASSIFIERS, VOCAB)
    files = {name: file_sha256(bundle / name) for name in names}
    manifest["embedding_space"] = embedding_space(files, manifest)
    (bundle / CARD).write_text(render_model_card(manifest), encoding="utf-8")
    files[CARD] = file_sha256(bundle / CARD)
    manifest["files"] = files
    manifest["embedding_space"] = manifest.pop("embedding_space")  # keep the doc's key order
    manifest[DIGEST_FIELD] = bundle_digest(manifest, default=json_default)  # last change: load() detects edits
    write_json(bundle / MANIFEST, manifest)


def refuse_existing(out: Path, force: bool) -> None:
    if (out.exists() or out.is_symlink()) and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")


def write_archive(bundle_dir: Path, out: Path, force: bool = False, check=None) -> Path:
    """Zip a bundle directory into one ``.dagnn`` file, atomically; ``check(path)`` may vet the finished
    temporary archive before it replaces anything."""
    refuse_existing(out, force)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(p.name for p in bundle_dir.iterdir() if p.is_file()):
                zf.write(bundle_dir / name, arcname=name)
        if check is not None:
            check(tmp)

    return atomic_write(out, write)
