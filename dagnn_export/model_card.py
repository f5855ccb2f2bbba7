"""MODEL_CARD.md of a bundle, generated from its manifest so the card cannot disagree with the bundle."""
from __future__ import annotations


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _map_row(name: str, m: dict | None) -> str:
    m = m or {}
    return f"| {name} | {_fmt(m.get('i2t'))} | {_fmt(m.get('t2i'))} | {_fmt(m.get('avg'))} |"


def _image_cost(graph: dict) -> list:
    """What one photo costs the image encoder, and whether its mirror image is averaged in."""
    cost = graph.get("cost") if isinstance(graph.get("cost"), dict) else {}
    out = []
    if cost.get("macs_per_photo"):
        out.append(f"- The image encoder costs {cost['macs_per_photo'] / 1e9:.2f} GMAC per photo "
                   f"({' + '.join(map(str, cost.get('backbones') or [])) or 'its backbone'} at "
                   f"{cost.get('input_side')} px).")
    if graph.get("mirror"):
        out.append("- Mirror test-time augmentation: a photo's embedding is the mean of its own and its "
                   "left-right mirror image's (two backbone passes per photo).")
    return out


def render_model_card(manifest: dict) -> str:
    model, cfg, metrics = manifest["model"], manifest.get("config", {}), manifest.get("metrics", {})
    labels, parity = manifest["labels"], manifest.get("parity", {})
    sizes = metrics.get("split_sizes", {})
    data = cfg.get("data")
    lines = [
        f"# Model card: DAGNN ({model.get('variant')}) — {model.get('backbone')} image encoder, "
        f"{model.get('precision')}",
        "",
        "Dual Adversarial Graph Neural Network (Qian et al., AAAI 2021) for multi-label cross-modal "
        "image–text retrieval, exported as ONNX graphs for torch-free serving.",
        "",
        "## What it does",
        f"- `image_encoder.onnx`: a {manifest['preprocessing']['size']}×{manifest['preprocessing']['size']} "
        "RGB uint8 photo (decoded and centre-cropped by `dagnn_runtime.preprocess`) → a "
        f"{manifest['embedding_dim']}-d embedding and cosine scores for the {len(labels)} labels.",
        f"- `text_encoder.onnx`: a text's tags as row numbers of the {manifest['vocabulary']['size']}-tag "
        "vocabulary (`vocab.txt`) → an embedding in the same space and label scores.",
        *_image_cost(manifest["graphs"].get("image_encoder", {})),
        "- Each graph's larger tensors sit beside it in `<graph>.onnx.data` (standard ONNX external data).",
        "- Images and texts are compared by cosine similarity of their embeddings; the label classifiers were "
        f"produced once by the {str(model.get('gnn') or 'linear').upper()} label graph network and are "
        "constants of the graphs.",
        "",
        "## Training data",
        f"- Data set: `{data}`" if data else "- Data set: not recorded",
        f"- Pairs: {sizes.get('train', 'n/a')} train, {sizes.get('val', 'n/a')} validation, "
        f"{sizes.get('test', 'n/a')} test (validation carved from training; test never used for selection).",
        f"- Labels ({len(labels)}): {', '.join(labels)}.",
        f"- Image backbone: {model.get('backbone')}, frozen (training used its cached features); "
        f"DAGNN variant {model.get('variant')}, label network {model.get('gnn') or 'none (linear classifiers)'}.",
        "",
        "## Results (test split, mean average precision)",
        "| measured on | image→text | text→image | average |",
        "|---|---|---|---|",
        _map_row(f"this bundle ({model.get('precision')}, onnxruntime)", metrics.get("test")),
    ]
    if metrics.get("test_fp32"):
        lines.append(_map_row("fp32 graphs (onnxruntime)", metrics["test_fp32"]))
    torch_test = (metrics.get("torch_run") or {}).get("test")
    if torch_test:
        lines.append(_map_row("training run (torch, cached features)", torch_test))
    tag = metrics.get("test_tagging")
    if tag:
        lines += ["", f"Image tagging at the calibrated thresholds: per-label mAP {_fmt(tag.get('mean_ap'))}, "
                      f"CF1 {_fmt(tag.get('CF1'))}, OF1 {_fmt(tag.get('OF1'))}."]
    lines += ["", "## Checks made at export"]
    diffs = parity.get("max_abs_diff", {})
    if diffs:
        lines.append(f"- onnxruntime vs torch on {parity.get('samples')} validation pairs, max abs diff: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
                     + f" (tolerance {parity.get('tolerance')}).")
    q = parity.get("int8_vs_fp32")
    if q:
        lines.append(f"- int8 vs fp32 image embeddings on {q['samples']} validation photos: mean cosine "
                     f"{q['image_embedding_cosine_mean']:.4f}, min {q['image_embedding_cosine_min']:.4f}.")
    quant = manifest.get("quantization")
    if quant:
        lines.append(f"- Image graph quantised: {quant['method']} {quant['format']} int8 "
                     f"({'per-channel' if quant['per_channel'] else 'per-tensor'} weights), calibrated "
                     f"({quant['calibration_method']}) on {quant['calibration_images']} images of the "
                     f"{quant.get('calibration_source')}.")
        chosen = quant.get("int8_config")
        if chosen:
            tried = ", ".join(f"{a['name']} {a['cosine_mean']:.4f}" for a in chosen["attempts"])
            needs = {"exact": "exact int8 products: fast VNNI/dot-product kernels where the CPU has them, "
                              "session.x64quantprecision elsewhere", "any": "any int8 kernels"}
            lines.append(f"- Served as `{chosen['chosen']}`, needing {needs.get(chosen.get('kernels'), 'its recorded session config')}; "
                         f"mean cosine to fp32 per configuration tried (with exact products): {tried}.")
    th = manifest.get("thresholds", {})
    lines.append(f"- Per-label decision thresholds calibrated on the {th.get('split')} split (maximum F1); "
                 "see `manifest.json`.")
    lines += [
        f"- Embedding space id: `{manifest.get('embedding_space')}` (indexes built with another bundle are refused).",
        "",
        "## Intended use",
        "- Retrieving photos for a set of tags and tags/texts for a photo, and suggesting labels, on photo "
        "collections similar to the training data.",
        "- Research and demonstration; rankings are a starting point for a person, not a decision.",
        "",
        "## Limits",
        f"- Only the {len(labels)} labels above are known; the text side only understands tags in `vocab.txt` "
        "(other tags are ignored; the runtime refuses a text with no known tag).",
        "- Trained on Flickr photos and tags: their topics, places and photographers are not representative "
        "of all photos; expect lower quality on other domains (documents, medical, screenshots...).",
        "- Label quality is that of the crowd annotations; the thresholds maximise F1 on the validation split "
        "and may need re-calibration on another collection.",
        "- mAP counts an item as relevant when it shares any label with the query; it says little about "
        "fine-grained relevance.",
    ]
    if model.get("precision") == "int8":
        lines.append("- int8 image embeddings differ slightly from fp32 ones: do not mix them in one index "
                     "(the embedding space id differs).")
    return "\n".join(lines) + "\n"
