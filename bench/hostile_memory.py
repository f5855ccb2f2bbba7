"""Peak memory and time of the worst inputs the image front door and the bundle loader accept or refuse.

Each case runs in a fresh Python process that reports its own peak RSS, so the figure includes the
interpreter and the imported libraries (numpy, Pillow, onnxruntime for the bundle case). On Linux the peak
is ``VmHWM`` of /proc/self/status: ``resource.getrusage``'s ``ru_maxrss`` also counts the peak of the
process that forked this one (under pytest that reads 2 GB for every case); elsewhere ``ru_maxrss``.
Prints a markdown table.

    python bench/hostile_memory.py [--out DIR] [--only NAME ...]

The inputs are generated into DIR (default: a temporary folder); tests/test_reliability_memory.py runs the
same cases and asserts every peak stays under 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# name -> (what it is, how it is made, the call measured)
CASES = {
    "strip_100000x1": ("100000x1 grey PNG (177 bytes)", "strip", "image"),
    "over_budget_72mpx": ("9000x8000 PNG header (72 Mpx, over the 64 Mpx budget)", "over_budget", "image"),
    "bomb_900mpx": ("30000x30000 PNG header (Pillow's bomb limit)", "bomb", "image"),
    "rgba_64mpx": ("8000x8000 RGBA PNG, just under the budget", "rgba", "image"),
    "palette_alpha_64mpx": ("8000x8000 palette PNG with transparency", "palette", "image"),
    "grey16_64mpx": ("8000x8000 16-bit grey PNG", "grey16", "image"),
    "jpeg_64mpx": ("8000x8000 JPEG (decoded at 1/8 scale)", "jpeg", "image"),
    "zipbomb_bundle": (".dagnn listing a 300 MiB member (0.3 MB in the archive)", "zipbomb", "bundle"),
}

_MEASURE = """
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
try:
    if kind == "image":
        from dagnn_runtime.preprocess import load_image
        load_image(path)
    else:
        from dagnn_runtime.bundle import read_bundle
        read_bundle(path)
    outcome = "accepted"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[-90:]
wall = time.perf_counter() - t0
try:
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": peak_kb / 1024, "wall_s": wall, "outcome": outcome}))
"""


def make(recipe: str, out: Path) -> Path:
    """Write the input of one case into ``out`` (only once) and return its path."""
    import numpy as np
    from PIL import Image

    from hostile import png_header_only, tampered_bundles

    out.mkdir(parents=True, exist_ok=True)
    side = 8000
    paths = {"strip": out / "strip.png", "over_budget": out / "over.png", "bomb": out / "bomb.png",
             "rgba": out / "rgba.png", "palette": out / "palette.png", "grey16": out / "grey16.png",
             "jpeg": out / "big.jpg", "zipbomb": out / "bundles" / "zipbomb.dagnn"}
    path = paths[recipe]
    if path.exists():
        return path
    if recipe == "strip":
        Image.new("L", (100000, 1)).save(path)
    elif recipe == "over_budget":
        png_header_only(path, 9000, 8000)
    elif recipe == "bomb":
        png_header_only(path, 30000, 30000)
    elif recipe == "rgba":
        Image.new("RGBA", (side, side), (30, 120, 200, 128)).save(path, compress_level=1)
    elif recipe == "palette":
        img = Image.new("P", (side, side), 1)
        img.putpalette([0, 0, 0, 30, 120, 200] + [0] * 762)
        img.save(path, transparency=0, compress_level=1)
    elif recipe == "grey16":
        Image.fromarray(np.full((side, side), 40000, np.uint16)).save(path, compress_level=1)
    elif recipe == "jpeg":
        Image.new("RGB", (side, side), (30, 120, 200)).save(path, quality=80)
    elif recipe == "zipbomb":
        tampered_bundles(path.parent)
    return path


def measure(name: str, out: Path) -> dict:
    """Run one case in a fresh process: peak RSS (MB), wall time (s) of the call, outcome."""
    _, recipe, kind = CASES[name]
    path = make(recipe, out)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / ".pkgs"), *sys.path]))
    result = subprocess.run([sys.executable, "-c", _MEASURE, kind, str(path)], env=env, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="dagnn-hostile-"))
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, inputs in {out}\n")
    print("| case | input | peak RSS (MB) | wall (s) | outcome |")
    print("|---|---|---|---|---|")
    for name in args.only or CASES:
        r = measure(name, out)
        print(f"| {name} | {CASES[name][0]} | {r['peak_mb']:.0f} | {r['wall_s']:.2f} | {r['outcome']} |",
              flush=True)


if __name__ == "__main__":
    main()
