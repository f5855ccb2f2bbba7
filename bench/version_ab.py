"""This checkout's runtime against another version's, on the same bundle, in one process and alternated.

    python bench/version_ab.py --baseline OLD_CHECKOUT --bundle BUNDLE [--image PHOTO] [--rounds 25]

A speed change in the runtime's own Python (not in a bundle's graphs) is measured here: ``OLD_CHECKOUT`` is
a source tree of the version to compare with (``git worktree add OLD_CHECKOUT COMMIT``), whose ``runtime/``
is imported beside this checkout's under another name. Both load ``BUNDLE`` with the same threads; one text
query, a batch of 256 texts and (with ``--image``) one photo are encoded by each side in turn (A B A B),
both warmed up, and the table gives medians with min-max, the load at the start and the cores other
processes used. The two sides' embeddings must agree to 1e-6, so that only the speed differs.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad, Table, alternate, check_load, command_line, usable_cores  # noqa: E402

import dagnn_runtime  # noqa: E402

ONE_TEXT = ["sky, clouds, sunset"]


def import_runtime(checkout: Path, name: str = "baseline_runtime"):
    """The ``runtime/`` package of another source tree, imported as ``name`` (its imports are relative)."""
    init = checkout / "runtime" / "__init__.py"
    if not init.is_file():
        sys.exit(f"{checkout}: no runtime/__init__.py (give a source tree of this project)")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compare(table: Table, what: str, new, old, rounds: int, inner: int, warmup: int) -> None:
    """One row: this checkout's call against the baseline's, alternated, in ms per call."""
    a, b = new(), old()
    if a.shape != b.shape or not np.allclose(a, b, atol=1e-6):
        sys.exit(f"{what}: the two versions' embeddings differ (max {np.abs(a - b).max():.2e}); not a speed A/B")
    res = alternate({"this": new, "baseline": old}, rounds, warmup=warmup, inner=inner)
    ratio = res["baseline"].median / res["this"].median
    table.add(what, f"{res['this'].fmt(1e3, 3)} vs {res['baseline'].fmt(1e3, 3)}: baseline / this = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="source tree of the version to compare with")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--image", type=Path, help="a photo: adds one image encoded end to end")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--load-limit", type=float, default=1.0)
    parser.add_argument("--allow-load", action="store_true", help="measure even above --load-limit (marked)")
    args = parser.parse_args()
    start_load = check_load(args.load_limit, args.allow_load)
    baseline = import_runtime(args.baseline.resolve())
    this = dagnn_runtime.load(args.bundle, threads=args.threads)
    old = baseline.load(args.bundle, threads=args.threads)
    words = [t for t in this.vocab if t.isalpha()][:40]
    batch = [" ".join(words[i % 37: i % 37 + 1 + i % 4]) for i in range(256)]
    other = OtherLoad()
    table = Table()
    compare(table, "one text query of 3 tags (ms, encode_texts)", lambda: this.encode_texts(ONE_TEXT),
            lambda: old.encode_texts(ONE_TEXT), args.rounds, inner=200, warmup=200)
    compare(table, "a batch of 256 texts (ms)", lambda: this.encode_texts(batch), lambda: old.encode_texts(batch),
            args.rounds, inner=3, warmup=3)
    if args.image:
        compare(table, "one photo (ms, encode_images from the file)", lambda: this.encode_images([args.image]),
                lambda: old.encode_images([args.image]), args.rounds, inner=5, warmup=5)
    cores = other.cores()
    marked = cores > OtherLoad.LIMIT or start_load > args.load_limit
    warning = " (taken under load: do not publish)" if marked else ""
    print(f"$ {command_line()}")
    table.print(f"bundle {args.bundle}; this checkout vs {args.baseline}; {args.threads or usable_cores()} threads; load average "
                f"{start_load:.2f} at start; other processes {cores:.2f} cores{warning}")


if __name__ == "__main__":
    main()
