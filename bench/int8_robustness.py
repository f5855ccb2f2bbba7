"""Does int8 export hold up across training runs, and what does it cost in speed once it holds?

    python bench/int8_robustness.py RUN [RUN ...] [--data DIR] [-n 32] [--rounds 7] [--load-limit 1.5]

For each training run folder: export it as fp32 and as int8 (into a temporary folder, deleted after), then
one table row: the int8 serving configuration the export chose (fastest first, see
``dagnn_export.quantize.INT8_CONFIGS``), the int8 image embeddings' mean / min cosine to fp32 on the
validation split, the test avg mAP of int8 minus fp32 (both measured at export with the exported graphs),
and the image encoder's speed-up: 1 thread, batch 1, ``n`` validation photos (decoding excluded), fp32 and
int8 (with its recorded session settings) timed in alternating rounds after warm-up; milliseconds per photo
as median (min-max) of the rounds. Timing is refused above the load limit (``--allow-load`` marks the
table as taken under load instead).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import alternate, check_load, command_line, load_average  # noqa: E402

from dagnn_export.errors import ExportError  # noqa: E402
from dagnn_export.export import export_run  # noqa: E402
from dagnn_export.verify import ort_session  # noqa: E402
from dagnn_runtime.dataset import Dataset  # noqa: E402
from dagnn_runtime.preprocess import load_batch  # noqa: E402


def val_photos(run: Path, data: Path | None, n: int) -> list[Path]:
    """The first ``n`` validation photos of the run (the split the export's cosines are measured on)."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    dataset = Dataset.load(data or Path(config["data"]))
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    paths = [dataset.image_path(dataset.row_index[r]) for r in splits["val"]]
    return [p for p in paths if p is not None][:n]


def measure(run: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="int8-robustness-") as tmp:
        fp32, int8 = Path(tmp) / "fp32", Path(tmp) / "int8"
        export_run(run, fp32, data=args.data, calibration_size=args.calibration_size)
        row = {"run": run.name}
        try:
            export_run(run, int8, data=args.data, quantize="int8", calibration_size=args.calibration_size)
        except ExportError as exc:
            return {**row, "chosen": f"refused: {exc}"}
        m = json.loads((int8 / "manifest.json").read_text(encoding="utf-8"))
        q, metrics = m["parity"]["int8_vs_fp32"], m["metrics"]
        spec = m["graphs"]["image_encoder"]
        row.update(chosen=m["quantization"]["int8_config"]["chosen"], session_config=spec.get("session_config", {}),
                   cos_mean=q["image_embedding_cosine_mean"], cos_min=q["image_embedding_cosine_min"],
                   map_delta=metrics["test"]["avg"] - metrics["test_fp32"]["avg"])
        size = m["preprocessing"]["size"]
        photos = [load_batch([p], size) for p in val_photos(run, args.data, args.n)]
        sessions = {"fp32": ort_session(fp32 / "image_encoder.onnx", 1),
                    "int8": ort_session(int8 / "image_encoder.onnx", 1, row["session_config"])}
        sides = {k: (lambda s=s: [s.run(None, {"pixels": x}) for x in photos]) for k, s in sessions.items()}
        stats = alternate(sides, rounds=args.rounds, warmup=1)
        row.update({f"{k}_ms": stats[k].fmt(scale=1e3 / len(photos)) for k in stats},
                   speedup=stats["fp32"].median / stats["int8"].median, photos=len(photos))
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training run folders (dagnn train --out RUN)")
    ap.add_argument("--data", type=Path, default=None, help="data set folder, when not the one the run records")
    ap.add_argument("-n", type=int, default=32, help="validation photos timed per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calibration-size", type=int, default=256)
    ap.add_argument("--load-limit", type=float, default=1.5)
    ap.add_argument("--allow-load", action="store_true", help="time anyway above the load limit (marked)")
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "config.json").is_file():
            sys.exit(f"error: {run} is not a training run folder (no config.json)")
    start = check_load(args.load_limit, args.allow_load)
    rows = [measure(run, args) for run in args.runs]
    print(f"# {command_line()}")
    under = f" -- TAKEN UNDER LOAD (above {args.load_limit}), not for publication" if start > args.load_limit else ""
    print(f"# load average {start:.2f} at start, {load_average():.2f} at end; 1 thread, batch 1{under}")
    header = ("run", "chosen", "cos mean", "cos min", "test avg dmAP", "fp32 ms/photo", "int8 ms/photo", "speed-up")
    print(" | ".join(header))
    for r in rows:
        if "cos_mean" not in r:
            print(f"{r['run']} | {r['chosen']}")
            continue
        print(" | ".join([r["run"], r["chosen"], f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}",
                          f"{r['map_delta']:+.4f}", r["fp32_ms"], r["int8_ms"], f"{r['speedup']:.2f}x"]))


if __name__ == "__main__":
    main()
