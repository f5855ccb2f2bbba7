"""Peak memory and time of the worst inputs the image front door and the bundle loader accept or refuse.

Each case runs in a fresh Python process that reports its own peak RSS, so the figure includes the
interpreter and the imported libraries (numpy, Pillow, onnxruntime for the bundle and CLI cases). On Linux
the peak is ``VmHWM`` of /proc/self/status: ``resource.getrusage``'s ``ru_maxrss`` also counts the peak of
the process that forked this one (under pytest that reads 2 GB for every case); elsewhere ``ru_maxrss``.
Kinds of case:

- ``image``: ``load_image(FILE)`` in a fresh process;
- ``cli``: ``dagnn tag --bundle B --image FILE`` in a fresh process (a small generated bundle);
- ``bundle``: ``read_bundle(FILE)``;
- ``serve``: a real ``dagnn serve`` (generated bundle and index) gets ``UPLOADS`` concurrent
  ``POST /v1/tag`` uploads of FILE (multipart field ``image``); the figure is the server process's
  ``VmHWM`` after all of them were answered, start-up included.

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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

UPLOADS = 16


class Case(NamedTuple):
    what: str       # the input, in words
    recipe: str     # how ``make`` writes it
    kind: str       # image | cli | bundle | serve
    refused: bool   # whether the front door (or the bundle loader) refuses it


CASES = {
    "strip_100000x1": Case("100000x1 grey PNG (177 bytes)", "strip", "image", True),
    "over_budget_72mpx": Case("9000x8000 PNG header (72 Mpx, over the 64 Mpx budget)", "over_budget", "image", True),
    "bomb_900mpx": Case("30000x30000 PNG header (Pillow's bomb limit)", "bomb", "image", True),
    "rgba_64mpx": Case("8000x8000 RGBA PNG, just under the budget", "rgba", "image", False),
    "palette_alpha_64mpx": Case("8000x8000 palette PNG with transparency", "palette", "image", False),
    "grey16_64mpx": Case("8000x8000 16-bit grey PNG", "grey16", "image", False),
    "jpeg_64mpx": Case("8000x8000 JPEG (decoded at 1/8 scale)", "jpeg", "image", False),
    "icon_169mpx": Case("ICO whose directory says 16x16, holding a 13000x13000 RGBA PNG (0.7 MB)", "icon_big",
                        "image", True),
    "icon_169mpx_cli": Case("the same ICO, `dagnn tag --bundle B --image FILE`", "icon_big", "cli", True),
    "icon_64mpx": Case("ICO whose directory says 16x16, holding an 8000x8000 RGBA PNG (0.26 MB)", "icon_ok",
                       "image", False),
    "icon_64mpx_cli": Case("the same ICO, `dagnn tag --bundle B --image FILE`", "icon_ok", "cli", False),
    "progressive_jpeg_169mpx": Case("13000x13000 progressive JPEG header (1 KB; libjpeg holds every "
                                    "coefficient even at 1/8 scale)", "progressive", "image", True),
    "multiscan_jpeg_169mpx": Case("13000x13000 sequential JPEG whose first scan has one of 3 components",
                                  "multiscan", "image", True),
    "webp_animated_64mpx": Case("8000x8000 animated WEBP (144 bytes)", "webp", "image", True),
    "tiff_tiles_16384": Case("64x64 TIFF in one 16384x16384 RGBA deflate tile (1 MB)", "tiles", "image", True),
    "tiff_3000_tags": Case("8x8 TIFF listing 3000 tags with data past its end", "tags", "image", False),
    "tiff_20000_tags": Case("8x8 TIFF listing 20000 such tags", "many_tags", "image", True),
    "serve_16x_icon_169mpx": Case(f"{UPLOADS} concurrent uploads of the 13000x13000 ICO to `dagnn serve`",
                                  "icon_big", "serve", True),
    "serve_16x_icon_64mpx": Case(f"{UPLOADS} concurrent uploads of the 8000x8000 ICO to `dagnn serve`",
                                 "icon_ok", "serve", False),
    "serve_16x_palette_64mpx": Case(f"{UPLOADS} concurrent uploads of the 8000x8000 palette PNG to `dagnn serve`",
                                    "palette", "serve", False),
    "zipbomb_bundle": Case(".dagnn listing a 300 MiB member (0.3 MB in the archive)", "zipbomb", "bundle", True),
}

_MEASURE = """
import contextlib, io, json, re, resource, sys, time
kind, path, bundle = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
try:
    if kind == "image":
        from dagnn_runtime.preprocess import load_image
        load_image(path)
        outcome = "accepted"
    elif kind == "cli":
        from dagnn_cli.app import main
        sys.argv = ["dagnn", "tag", "--bundle", bundle, "--image", path]
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
        said = re.sub(r"^error: image '[^']*': ", "", " ".join(err.getvalue().split()))
        outcome = "accepted" if code == 0 else f"exit {code}: " + said[:160]
    else:
        from dagnn_runtime.bundle import read_bundle
        read_bundle(path)
        outcome = "accepted"
except Exception as exc:
    message = re.sub(r"^(image '[^']*'|bundle \\S+): ", "", str(exc))  # the input's temporary path
    outcome = type(exc).__name__ + ": " + (message if len(message) <= 160 else message[:159] + "…")
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

    import hostile

    out.mkdir(parents=True, exist_ok=True)
    side = 8000
    paths = {"strip": out / "strip.png", "over_budget": out / "over.png", "bomb": out / "bomb.png",
             "rgba": out / "rgba.png", "palette": out / "palette.png", "grey16": out / "grey16.png",
             "jpeg": out / "big.jpg", "zipbomb": out / "bundles" / "zipbomb.dagnn",
             "icon_big": out / "icon_169mpx.ico", "icon_ok": out / "icon_64mpx.ico",
             "progressive": out / "progressive.jpg", "multiscan": out / "multiscan.jpg",
             "webp": out / "animated.webp", "tiles": out / "tiles.tif", "tags": out / "tags3000.tif",
             "many_tags": out / "tags20000.tif"}
    path = paths[recipe]
    if path.exists():
        return path
    if recipe == "strip":
        Image.new("L", (100000, 1)).save(path)
    elif recipe == "over_budget":
        hostile.png_header_only(path, 9000, 8000)
    elif recipe == "bomb":
        hostile.png_header_only(path, 30000, 30000)
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
    elif recipe == "icon_big":
        hostile.icon(path, hostile.flat_png(13000, 13000, "RGBA"))
    elif recipe == "icon_ok":
        hostile.icon(path, hostile.flat_png(side, side, "RGBA"))
    elif recipe == "progressive":
        hostile.jpeg_header_only(path, 13000, 13000)
    elif recipe == "multiscan":
        hostile.jpeg_header_only(path, 13000, 13000, progressive=False, interleaved=False)
    elif recipe == "webp":
        hostile.animated_webp(path, side, side)
    elif recipe == "tiles":
        hostile.tiff_tiled(path, 64, 64, 16384, samples=4)
    elif recipe == "tags":
        hostile.tiff_with_tags(path, 3000)
    elif recipe == "many_tags":
        hostile.tiff_with_tags(path, 20000)
    elif recipe == "zipbomb":
        hostile.tampered_bundles(path.parent)
    return path


def bundle_and_index(out: Path) -> tuple:
    """A small generated bundle and its index (made once in ``out``), for the cli and serve cases."""
    from bundle_factory import build_bundle, build_dataset

    bundle, index = out / "bundle", out / "index"
    if not (bundle / "manifest.json").exists():
        build_bundle(bundle)
    if not index.exists():
        import dagnn_runtime
        from serve_helpers import build_index

        build_index(dagnn_runtime.load(bundle), build_dataset(out / "data"), index)
    return bundle, index


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / ".pkgs"), *sys.path]))


def peak_of(pid: int) -> float:
    """``VmHWM`` of a running process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def measure_serve(path: Path, out: Path, uploads: int = UPLOADS) -> dict:
    """``uploads`` concurrent POST /v1/tag of ``path`` to a real ``dagnn serve``: the server's peak RSS."""
    import httpx

    from serve_helpers import serve

    bundle, index = bundle_and_index(out)
    data = path.read_bytes()
    logs = out / "serve-logs"
    logs.mkdir(exist_ok=True)

    def post(_):
        try:
            return httpx.post(srv.url + "/v1/tag", files={"image": (path.name, data)}, timeout=600).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    with serve(bundle, index, logs, env=_env()) as srv:
        idle = peak_of(srv.proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            statuses = list(pool.map(post, range(uploads)))
        wall = time.perf_counter() - t0
        peak = peak_of(srv.proc.pid)
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    answered = ", ".join(f"{n} x {s}" for s, n in counts.items())
    outcome = ("accepted" if counts == {200: uploads} else
               "refused" if counts == {422: uploads} else "mixed") + f": {answered} (idle server {idle:.0f} MB)"
    return {"peak_mb": peak, "wall_s": wall, "outcome": outcome}


def measure(name: str, out: Path) -> dict:
    """Run one case in a fresh process: peak RSS (MB), wall time (s) of the call, outcome."""
    case = CASES[name]
    path = make(case.recipe, out)
    if case.kind == "serve":
        return measure_serve(path, out)
    bundle = bundle_and_index(out)[0] if case.kind == "cli" else ""
    result = subprocess.run([sys.executable, "-c", _MEASURE, case.kind, str(path), str(bundle)], env=_env(),
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
        print(f"| {name} | {CASES[name].what} | {r['peak_mb']:.0f} | {r['wall_s']:.2f} | {r['outcome']} |",
              flush=True)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
