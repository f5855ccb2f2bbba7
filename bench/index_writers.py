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
        from dagnn_runtime.indexes.store import Store
        store = Store(folder)
        found = set(store.rows(range(1, store.marks()[0] + 1)).values())
        found = {item_id for item_id, _ in found}
        store.close()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writers")
    w.add_argument("--kills", type=int, default=50)
    w.add_argument("--per-writer", type=int, default=500)
    w.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"writers": writers}[args.what](args)


if __name__ == "__main__":
    main()
