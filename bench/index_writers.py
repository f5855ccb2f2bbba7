"""Index store under concurrent writers and kill -9, and the bytes one batch of additions writes.

    nice python bench/index_writers.py writers [--kills 50] [--per-writer 500]
    nice python bench/index_writers.py bytes [--items 100000] [--add 1000] [--dim 1024]

writers: 4 writer processes add 500 distinct items each while a fifth removes 100 items added beforehand;
every so often one of them (chosen at random) is killed with SIGKILL and started again (it resumes where
its acknowledged work ended) until ``--kills`` kills are done and all have finished. Prints the items
expected and found, what is missing or extra, leftover files, and the time.

bytes: an index of ``--items`` synthetic clustered unit vectors (built once, graph checkpointed), then, in
a fresh process, ``--add`` more items added one call each and in one call: bytes the process wrote
(``/proc/self/io`` write_bytes, i.e. sent to the block layer) and how much the index's files grew, next
to the size of the graph checkpoint (what every save wrote before the store: the whole index).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WRITER = REPO / "tests" / "index_writer.py"
sys.path.insert(0, str(REPO / "tests"))


def _spawn(folder, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, str(WRITER), str(folder), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def writers(args) -> None:
    from index_writer import add_ids, open_writer_index

    root = Path(tempfile.mkdtemp(prefix="dagnn-writers-"))
    folder = root / "ix"
    try:
        old = [f"old{i}" for i in range(100)]
        index = open_writer_index(folder)
        add_ids(index, old)
        index.close()
        jobs = {f"w{w}": ("add", f"w{w}-", str(args.per_writer), "1") for w in range(4)}
        jobs["remover"] = ("remove", *old)
        rng = random.Random(args.seed)
        start = time.perf_counter()
        procs = {name: _spawn(folder, *job) for name, job in jobs.items()}
        started = {name: time.perf_counter() for name in jobs}
        kills, failures = 0, []
        while procs:
            time.sleep(0.02)
            for name, proc in list(procs.items()):
                if proc.poll() is not None:
                    if proc.returncode != -signal.SIGKILL:
                        if proc.returncode != 0:
                            failures.append(f"{name}: exit {proc.returncode}: {proc.stderr.read()[-300:]}")
                        del procs[name]
                    else:  # killed: start it again, it resumes
                        procs[name], started[name] = _spawn(folder, *jobs[name]), time.perf_counter()
            running = [n for n, p in procs.items() if time.perf_counter() - started[n] > 0.3]
            if kills < args.kills and running and rng.random() < 0.05:
                procs[rng.choice(running)].send_signal(signal.SIGKILL)
                kills += 1
        took = time.perf_counter() - start
        index = open_writer_index(folder)
        found = set(index.ids)
        index.close()
        expected = {f"w{w}-{i}" for w in range(4) for i in range(args.per_writer)}
        leftovers = sorted(p.name for p in folder.iterdir()
                           if not (p.name.startswith("index.db") and "tmp" not in p.name or p.name.startswith("graph-")))
        print("| writers | kills | items expected / found | missing | extra | failures | leftovers | time |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| 4 x {args.per_writer} + remover of 100 | {kills} | {len(expected)} / {len(found)} | "
              f"{len(expected - found)} | {len(found - expected)} | {len(failures)} | {leftovers or 'none'} | "
              f"{took:.1f} s |")
        for line in failures:
            print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def clustered(n: int, dim: int, seed: int, centers: int = 100):
    """Unit vectors around ``centers`` random directions: closer to real embeddings than uniform noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    v = c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _written() -> int:
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["write_bytes"])


def _sizes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def bytes_child(args) -> None:
    """In a fresh process: open the index, add ``--add`` items one call each, then ``--add`` in one call."""
    import json

    from dagnn_runtime.indexes import checkpoint
    from dagnn_runtime.indexes.hnsw import HnswIndex

    folder = Path(args.folder)
    index = HnswIndex.load(folder)
    extra = clustered(2 * args.add, args.dim, seed=2)
    out = {}
    for name, batches in (("one call per item", [[i] for i in range(args.add)]),
                          ("one call for all", [list(range(args.add, 2 * args.add))])):
        before, size, start = _written(), _sizes(folder), time.perf_counter()
        for batch in batches:
            index.add(extra[batch], [f"new{i}" for i in batch], [{"path": f"new/{i}.jpg"} for i in batch])
        out[name] = {"written": _written() - before, "grown": _sizes(folder) - size,
                     "seconds": time.perf_counter() - start}
    out["checkpoint_bytes"] = (folder / checkpoint.registered(index._store)["file"]).stat().st_size
    out["db_bytes"] = (folder / "index.db").stat().st_size
    out["pending"] = index.info()["pending_checkpoint"]
    index._store.close()  # no close(): it would checkpoint, which is not what one add costs
    print(json.dumps(out))


def bytes_written(args) -> None:
    import json

    from dagnn_runtime.indexes.hnsw import HnswIndex

    root = Path(tempfile.mkdtemp(prefix="dagnn-bytes-"))
    try:
        start = time.perf_counter()
        vectors = clustered(args.items, args.dim, seed=1)
        index = HnswIndex.build(vectors, [f"p{i}" for i in range(args.items)],
                                [{"path": f"photos/{i}.jpg"} for i in range(args.items)],
                                embedding_space="bench", modality="image", ef_construction=args.ef_construction)
        index.save(root / "ix")  # the store and a graph checkpoint
        index.close()
        built = time.perf_counter() - start
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        child = subprocess.run([sys.executable, __file__, "bytes-child", "--folder", str(root / "ix"),
                                "--add", str(args.add), "--dim", str(args.dim)],
                               env=env, capture_output=True, text=True, check=True)
        got = json.loads(child.stdout)
        print(f"index: {args.items} items x {args.dim}-d, built and saved in {built:.0f} s; index.db "
              f"{got['db_bytes'] / 1e6:.0f} MB, graph checkpoint {got['checkpoint_bytes'] / 1e6:.0f} MB "
              "(what every save wrote before the store)")
        print(f"| adding {args.add} items | bytes written (write_bytes) | per item | files grew | time |")
        print("|---|---|---|---|---|")
        for name in ("one call per item", "one call for all"):
            r = got[name]
            print(f"| {name} | {r['written'] / 1e6:.1f} MB | {r['written'] / args.add / 1e3:.1f} kB | "
                  f"{r['grown'] / 1e6:.1f} MB | {r['seconds']:.1f} s |")
        print(f"changes since the last checkpoint: {got['pending']} (one is written at >= max(1000, 10% of "
              f"the items), i.e. every {max(1000, args.items // 10)} changes here: amortised "
              f"{got['checkpoint_bytes'] / max(1000, args.items // 10) / 1e3:.1f} kB per change)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writers")
    w.add_argument("--kills", type=int, default=50)
    w.add_argument("--per-writer", type=int, default=500)
    w.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bytes")
    b.add_argument("--items", type=int, default=100_000)
    b.add_argument("--add", type=int, default=1000)
    b.add_argument("--dim", type=int, default=1024)
    b.add_argument("--ef-construction", type=int, default=100)
    c = sub.add_parser("bytes-child")
    c.add_argument("--folder", required=True)
    c.add_argument("--add", type=int, required=True)
    c.add_argument("--dim", type=int, required=True)
    args = parser.parse_args()
    {"writers": writers, "bytes": bytes_written, "bytes-child": bytes_child}[args.what](args)


if __name__ == "__main__":
    main()
