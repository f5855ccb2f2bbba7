"""Where the int8 image encoder loses precision on this CPU: saturating kernels, weight bits, or a layer.

    python bench/int8_cause.py RUN FP32_BUNDLE [--data DIR] [--calibration-size 256]

Quantises the fp32 image graph of ``FP32_BUNDLE`` (exported from ``RUN``) in several ways, calibrated on
the run's training photos as ``dagnn export --quantize int8`` does, and prints the mean / min cosine of each
int8 graph's embeddings to fp32 on the run's validation photos, once with onnxruntime's fast int8 kernels and
once with exact int8 products (``session.x64quantprecision=1``). Where the two agree, the fast kernels lost
nothing; where they differ, their saturating 16-bit pair sums (x86 without VNNI) did. Cosines do not depend
on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import command_line  # noqa: E402

from dagnn_export.quantize import calibration_images, quantize_image_graph  # noqa: E402
from dagnn_export.verify import cosines, encode_image_paths_ort, ort_session  # noqa: E402
from dagnn_runtime.dataset import Dataset  # noqa: E402

# Gv1 with the z-score of its input, and the backbone's last (head) convolution
HEAD_NODES = ("/Sub", "/Div", "/gv1/Gemm", "/backbone/body/_conv_head/Conv")
VARIANTS = (("8-bit weights", "none", ()),
            ("7-bit weights but the depthwise convolutions'", "matmul", ()),
            ("7-bit weights everywhere", "all", ()),
            ("7-bit but depthwise; Gv1, its z-score and the head conv in fp32", "matmul", HEAD_NODES))
KERNELS = (("fast kernels", {}), ("exact products", {"session.x64quantprecision": "1"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("fp32_bundle", type=Path)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--calibration-size", type=int, default=256)
    args = ap.parse_args()
    config = json.loads((args.run / "config.json").read_text(encoding="utf-8"))
    dataset = Dataset.load(args.data or Path(config["data"]))
    splits = json.loads((args.run / "splits.json").read_text(encoding="utf-8"))
    val = [dataset.image_path(dataset.row_index[r]) for r in splits["val"]]
    train = np.array([dataset.row_index[r] for r in splits["train"]])
    cal, _ = calibration_images(None, dataset, train, args.calibration_size)
    size = json.loads((args.fp32_bundle / "manifest.json").read_text(encoding="utf-8"))["preprocessing"]["size"]
    fp32_graph = args.fp32_bundle / "image_encoder.onnx"
    fp32 = encode_image_paths_ort(val, size, {"fp32": ort_session(fp32_graph)})["fp32"][0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-cause-") as tmp:
        for name, reduce_range, keep in VARIANTS:
            graph = Path(tmp) / f"{len(rows)}.onnx"
            quantize_image_graph(fp32_graph, graph, cal, size, Path(tmp), reduce_range=reduce_range, keep_fp32=keep)
            cells = []
            for _, session_config in KERNELS:
                emb = encode_image_paths_ort(val, size, {"q": ort_session(graph, 2, session_config)})["q"][0]
                cos = cosines(emb, fp32)
                cells.append(f"{cos.mean():.4f} (min {cos.min():.4f})")
            rows.append((name, *cells))
    print(f"# {command_line()}")
    print(f"# {len(val)} validation photos of {args.run.name}, {len(cal)} calibration photos; "
          "cosine of the int8 to the fp32 embeddings: mean (min)")
    print("| int8 graph | " + " | ".join(k for k, _ in KERNELS) + " |")
    print("|---|" + "---|" * len(KERNELS))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
