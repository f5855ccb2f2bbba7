"""Images per second of a backbone on real photos: eager PyTorch vs the ONNX graph under onnxruntime.

    python bench/backbone_speed.py DATA_DIR [--backbone efficientnet_lite0] [--images 256] [--threads 2]

Decoding (``load_batch``) is timed separately; ``dagnn features`` overlaps it with inference.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="8,32,64")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from dagnn_export.backbones import build_backbone, export_onnx
    from dagnn_runtime.dataset import Dataset
    from dagnn_runtime.preprocess import load_batch

    torch.set_num_threads(args.threads)
    ds = Dataset.load(args.data)
    paths = [ds.image_path(i) for i in ds.with_images()[: args.images]]
    t = time.perf_counter()
    pixels = load_batch(paths)
    print(f"decode+resize: {len(paths) / (time.perf_counter() - t):.0f} img/s (1 thread)")

    model = build_backbone(args.backbone)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        session = ort.InferenceSession(str(export_onnx(model, Path(tmp) / "b.onnx")), options,
                                       providers=["CPUExecutionProvider"])
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batches = [pixels[i:i + bs] for i in range(0, len(pixels), bs)]
        with torch.inference_mode():
            model(torch.from_numpy(batches[0]))  # warm-up
            t = time.perf_counter()
            for b in batches:
                model(torch.from_numpy(b))
            eager = len(pixels) / (time.perf_counter() - t)
        session.run(None, {"pixels": batches[0]})
        t = time.perf_counter()
        for b in batches:
            session.run(None, {"pixels": b})
        onnx = len(pixels) / (time.perf_counter() - t)
        print(f"batch {bs:3d}: torch eager {eager:6.1f} img/s   onnxruntime {onnx:6.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
