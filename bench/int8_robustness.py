"""Does int8 export hold up across training runs, and what does it cost in speed once it holds?

    python bench/int8_robustness.py RUN [RUN ...] --keep DIR [--no-timing] [-n 32] [--rounds 7]

For each training run folder: export it as int8 into ``DIR/RUN-int8`` (kept; a rerun reuses a finished
bundle, so an interrupted study resumes), then one table row: the int8 configuration the export chose (see
``dagnn_export.quantize.INT8_CONFIGS``), the int8 image embeddings' mean / min cosine to fp32 on the
validation split, and the test avg mAP of int8 minus fp32 (both measured at export with the exported
graphs, as the manifest records them).

Speed: a graph's speed depends on its configuration, not on its trained weights, so each configuration the
exports chose is timed once, on the first run that chose it, against that run's fp32 export
(``DIR/RUN-fp32``): image encoder, 1 thread, batch 1, ``n`` validation photos (decoding excluded), fp32 and
int8 (with its recorded session settings) in alternating rounds after warm-up; ms per photo as median
(min-max) of the rounds. Timing is refused on a loaded machine (``--allow-load`` marks the table instead);
``--no-timing`` exports only, e.g. while other jobs run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad, alternate, check_load, command_line, load_average  # noqa: E402

from dagnn_export.errors import ExportError  # noqa: E402
from dagnn_export.export import export_run  # noqa: E402
from dagnn_export.quantize import INT8_CONFIGS  # noqa: E402
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


def exported(run: Path, out: Path, args, quantize: str | None) -> Path:
    """``out``, exported from ``run`` unless a finished bundle is already there."""
    if not (out / "manifest.json").is_file():
        export_run(run, out, data=args.data, quantize=quantize, calibration_size=args.calibration_size)
    return out


def row_of(run: Path, args) -> dict:
    row = {"run": run.name, "path": run}
    try:
        int8 = exported(run, args.keep / f"{run.name}-int8", args, "int8")
    except ExportError as exc:
        return {**row, "chosen": f"refused: {exc}"}
    m = json.loads((int8 / "manifest.json").read_text(encoding="utf-8"))
    q, metrics, choice = m["parity"]["int8_vs_fp32"], m["metrics"], m["quantization"]["int8_config"]
    tried = {a["name"]: a["cosine_mean"] for a in choice["attempts"]}
    return {**row, "int8": int8, "chosen": choice["chosen"], "tried": tried,
            "session_config": m["graphs"]["image_encoder"].get("session_config", {}),
            "cos_mean": q["image_embedding_cosine_mean"], "cos_min": q["image_embedding_cosine_min"],
            "map_delta": metrics["test"]["avg"] - metrics["test_fp32"]["avg"]}


def speed(row: dict, args) -> dict:
    """fp32 vs int8 image encoder of one run, alternating rounds."""
    fp32 = exported(row["path"], args.keep / f"{row['run']}-fp32", args, None)
    m = json.loads((fp32 / "manifest.json").read_text(encoding="utf-8"))
    photos = [load_batch([p], m["preprocessing"]["size"]) for p in val_photos(row["path"], args.data, args.n)]
    sessions = {"fp32": ort_session(fp32 / "image_encoder.onnx", 1),
                "int8": ort_session(row["int8"] / "image_encoder.onnx", 1, row["session_config"])}
    sides = {k: (lambda s=s: [s.run(None, {"pixels": x}) for x in photos]) for k, s in sessions.items()}
    stats = alternate(sides, rounds=args.rounds, warmup=1)
    return {"timed_on": row["run"], **{f"{k}_ms": stats[k].fmt(scale=1e3 / len(photos)) for k in stats},
            "speedup": stats["fp32"].median / stats["int8"].median}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training run folders (dagnn train --out RUN)")
    ap.add_argument("--keep", type=Path, required=True, help="folder for the exported bundles (reused by reruns)")
    ap.add_argument("--data", type=Path, default=None, help="data set folder, when not the one the run records")
    ap.add_argument("-n", type=int, default=32, help="validation photos timed per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calibration-size", type=int, default=256)
    ap.add_argument("--no-timing", action="store_true", help="export and tabulate only")
    ap.add_argument("--load-limit", type=float, default=1.5)
    ap.add_argument("--allow-load", action="store_true", help="time anyway above the load limit (marked)")
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "config.json").is_file():
            sys.exit(f"error: {run} is not a training run folder (no config.json)")
    args.keep.mkdir(parents=True, exist_ok=True)
    rows = [row_of(run, args) for run in args.runs]
    timings, start, others = {}, None, None
    if not args.no_timing:
        start, others = check_load(args.load_limit, args.allow_load), OtherLoad()
        for row in rows:
            if "cos_mean" in row and row["chosen"] not in timings:
                timings[row["chosen"]] = speed(row, args)
    print(f"# {command_line()}")
    if timings:
        loaded = start > args.load_limit or others.cores() > OtherLoad.LIMIT
        under = " -- TAKEN UNDER LOAD, not for publication" if loaded else ""
        print(f"# load average {start:.2f} at start, {load_average():.2f} at end; other processes used "
              f"{others.cores():.2f} cores; image encoder, 1 thread, batch 1{under}")
    configs = [name for name, *_ in INT8_CONFIGS]
    header = ["run", "chosen", *(f"{name} cos" for name in configs), "cos mean", "cos min", "test avg dmAP",
              "fp32 ms/photo", "int8 ms/photo", "speed-up"]
    print(" | ".join(header))
    for r in rows:
        if "cos_mean" not in r:
            print(f"{r['run']} | {r['chosen']}")
            continue
        t = timings.get(r["chosen"], {})
        timed = [t.get("fp32_ms", "-"), t.get("int8_ms", "-"),
                 f"{t['speedup']:.2f}x" + ("" if t["timed_on"] == r["run"] else f" (timed on {t['timed_on']})")
                 if t else "-"]
        tried = [f"{r['tried'][name]:.4f}" if name in r["tried"] else "-" for name in configs]
        print(" | ".join([r["run"], r["chosen"], *tried, f"{r['cos_mean']:.4f}", f"{r['cos_min']:.4f}",
                          f"{r['map_delta']:+.4f}", *timed]))


if __name__ == "__main__":
    main()
