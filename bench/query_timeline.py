"""Where a `dagnn query` process spends its time: each stage's median over fresh processes, text and image
queries alternating, so that start-up work can be aimed at (docs/performance.md, start-up).

    python bench/query_timeline.py --bundle BUNDLE --index INDEX --image PHOTO [--text 'sky, clouds'] [--runs 7]
        [--one-after-the-other]

Each run is a fresh interpreter that runs the `dagnn query` command in-process with a few library functions
wrapped to note the time (opening the index, loading the bundle, building an encoder session, rendering,
closing); the interpreter's own start is the parent's wall time less the child's. The wrapping costs
microseconds, and the load is stated as in every bench (bench/benchlib.py). ``--one-after-the-other`` adds
the same queries with the index opened before the bundle loads instead of beside it, alternated with them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad, check_load, child_env, command_line, install_kind, load_average  # noqa: E402

# The child: stage marks around the library calls a query makes, printed as JSON on stderr at exit.
CHILD = r"""
import atexit, json, sys, time
t0 = time.perf_counter()
marks = [("start", 0.0)]
def mark(name):
    marks.append((name, time.perf_counter() - t0))
def report():
    sys.stderr.write("\nTIMELINE " + json.dumps(marks + [("exit", time.perf_counter() - t0)]) + "\n")
atexit.register(report)
if "--one-after-the-other" in sys.argv:  # the comparison: Searcher.open's thread pool run inline
    import concurrent.futures as cf
    sys.argv.remove("--one-after-the-other")
    class Inline:
        def __init__(self, *args, **kwargs): pass
        def __enter__(self): return self
        def __exit__(self, *exc): return False
        def submit(self, fn, *args):
            future = cf.Future()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
            return future
    cf.ThreadPoolExecutor = Inline
import dagnn_cli.main
mark("cli imported")
from dagnn_cli import render
from dagnn_runtime import bundle, engine, indexes, session
mark("runtime imported")
def wrap(owner, name, label):
    f = getattr(owner, name)
    def timed(*args, **kwargs):
        mark(label + " <")
        try:
            return f(*args, **kwargs)
        finally:
            mark(label + " >")
    setattr(owner, name, timed)
wrap(indexes.IndexSet, "open_all", "open index")
wrap(session, "load", "load bundle")
wrap(session.Model, "_build", "build session")
wrap(bundle.Bundle, "read_graph", "read graph")
wrap(bundle.Bundle, "read_weights", "read weights")
wrap(render, "search_result", "render")
wrap(engine.Searcher, "close", "close")
from dagnn_cli.app import main
main(sys.argv[1:])
"""

STAGES = [("interpreter start", None, "start"), ("import the CLI (typer)", "start", "cli imported"),
          ("import the runtime (numpy, ...)", "cli imported", "runtime imported"),
          ("parse arguments", "runtime imported", "open index <"),
          ("open the index || load the bundle and encoder", "open index <", "ready"),
          ("  open the index (second thread)", "open index <", "open index >"),
          ("  load the bundle (manifest, small files)", "load bundle <", "load bundle >"),
          ("  read, verify and load the encoder graph", "build session <", "build session >"),
          ("    read + SHA-256 of its weights file", "read weights <", "read weights >"),
          ("    read + SHA-256 of the graph file", "read graph <", "read graph >"),
          ("    the session build and its checks", None, None),  # the rest of the graph's stage
          ("encode and search", "ready", "render <"), ("render", "render <", "render >"),
          ("close the index", "close <", "close >"), ("exit", "close >", "exit")]
GRAPH = "  read, verify and load the encoder graph"


def stage_times(marks: list, wall: float) -> dict:
    at = dict(marks)  # the last mark of a name wins; each stage happens once per query
    # Searcher.open opens the index in a second thread while the bundle and encoder load: both are ready
    # when the later of the two ends
    at["ready"] = max(at.get("open index >", 0.0), at.get("build session >", 0.0))
    out = {"interpreter start": wall - at["exit"]}
    for name, a, b in STAGES[1:]:
        if a in at and b in at:
            out[name] = at[b] - at[a]
    reads = [out.get(name, 0.0) for name, _, _ in STAGES if name.startswith("    read")]
    out["    the session build and its checks"] = out[GRAPH] - sum(reads)
    out["whole process"] = wall
    return out


def run_child(argv: list) -> tuple[float, list]:
    """(wall seconds, stage marks) of one fresh `dagnn query` process."""
    t = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    wall = time.perf_counter() - t
    lines = [x for x in proc.stderr.decode(errors="replace").splitlines() if x.startswith("TIMELINE ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{' '.join(argv[3:])} failed (exit {proc.returncode}): {proc.stderr.decode()[-300:]}")
    return wall, json.loads(lines[-1].split(" ", 1)[1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True, help="a parent holding image/ and text/")
    ap.add_argument("--image", type=Path, required=True, help="the photo of the image query")
    ap.add_argument("--text", default="sky, clouds")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--one-after-the-other", action="store_true",
                    help="also run each query with the index opened before the bundle loads, not beside it "
                         "(the previous version's order), alternated with the others")
    ap.add_argument("--load-limit", type=float, default=1.0)
    ap.add_argument("--allow-load", action="store_true")
    args = ap.parse_args(argv)
    load0 = check_load(args.load_limit, args.allow_load)
    others = OtherLoad()
    queries = {"text": ["--text", args.text], "image": ["--image", str(args.image)]}
    if args.one_after_the_other:
        queries.update({f"{q}, in turn": what + ["--one-after-the-other"] for q, what in list(queries.items())})
    runs = {q: [] for q in queries}
    for r in range(args.runs + 1):  # the first round warms the page cache and writes bytecode caches
        for q, what in queries.items():
            wall, marks = run_child([sys.executable, "-c", CHILD, "query", "--bundle", str(args.bundle),
                                     "--index", str(args.index), *what])
            if r:
                runs[q].append(stage_times(marks, wall))
    load1, other = load_average(), others.cores()
    flag = "" if load0 <= args.load_limit and other <= OtherLoad.LIMIT else "  ** TAKEN UNDER LOAD: do not publish **"
    print(f"$ {command_line()}\n{install_kind()}; load average {load0:.2f} at start, {load1:.2f} at end (with this bench); "
          f"other processes {other:.2f} cores{flag}; median (min-max) ms of {args.runs} fresh processes each")
    names = [name for name, _, _ in STAGES] + ["whole process"]
    print(f"{'stage':46s}" + "".join(f"{'--' + q:>22s}" for q in queries))
    for name in names:
        cells = []
        for q in queries:
            values = [1e3 * t[name] for t in runs[q] if name in t]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})" if values else "-")
        print(f"{name:46s}" + "".join(f"{c:>22s}" for c in cells))


if __name__ == "__main__":
    main()
