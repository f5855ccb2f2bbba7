"""Do several ``dagnn serve`` processes answer more than one on this machine? (The question behind a
``--workers N`` option: each process opens the index for reading, writes go through SQLite, and each sees
the others' writes on refresh, so N independent servers on one index are what N workers would be.)

    python bench/serve_processes.py --bundle B --index I --photo PHOTO.jpg [--processes 2] \
        [--concurrency 1,32] [--seconds 5] [--rounds 5]

One server (default threads) and ``--processes`` servers (``--threads 1`` each, so that together they
use the same cores) run at the same time; wrk (``--processes`` client threads for both sides, so the client
costs the same) drives one side, then the other, A B A B …, round by round. For the N servers each client
thread's connections go to one of them (wrk's per-thread address), as a kernel spreading the connections
of one shared port would. Prints median (min–max) q/s and p99 per scenario and concurrency, and the load.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_average  # noqa: E402
from serve_load import ensure_wrk, print_alternated, run_wrk, scripts, start_server  # noqa: E402


def spread_script(base: Path | None, ports: list, out: Path) -> Path:
    """``base``'s request (or a GET) with client thread i sending to ``ports[i % len(ports)]``."""
    listed = ", ".join(str(p) for p in ports)
    setup = (f'local ports = {{{listed}}}\nlocal n = 0\nfunction setup(thread)\n  n = n + 1\n'
             f'  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[(n - 1) % #ports + 1]))[1]\nend\n')
    out.write_text((base.read_text() if base is not None else "") + setup)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--photo", required=True, type=Path)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scenarios", default="healthz,text_search,image_search")
    ap.add_argument("--text", default="sky, clouds, sunset")
    args = ap.parse_args(argv)
    wrk, n = ensure_wrk(), args.processes
    print(f"# 1 server against {n}, alternated, {args.rounds} rounds of {args.seconds} s, wrk -t{n}; "
          f"load average at start {load_average():.2f}", flush=True)
    one = [start_server(args.bundle, args.index, [])]
    many = [start_server(args.bundle, args.index, ["--threads", "1"]) for _ in range(n)]
    sides = {"1 process": one, f"{n} processes": many}
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plans = scripts(Path(tmp), args.photo.read_bytes(), args.text, 10)
            for name in args.scenarios.split(","):
                path, base = plans[name]
                lua = {side: spread_script(base, [int(url.rsplit(":", 1)[1]) for _, url in servers],
                                           Path(tmp) / f"{name}-{len(servers)}.lua")
                       for side, servers in sides.items()}
                for side, servers in sides.items():
                    run_wrk(wrk, servers[0][1] + path, lua[side], 2 * n, 2, threads=n)  # warm-up
                for c in [int(c) for c in args.concurrency.split(",")]:
                    for r in range(args.rounds):
                        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                        for side in order:
                            row = run_wrk(wrk, sides[side][0][1] + path, lua[side], max(c, n), args.seconds,
                                          threads=n)
                            results.setdefault((name, max(c, n), side), []).append(row)
    finally:
        for proc, _ in one + many:
            proc.terminate()
            proc.wait(60)

    print_alternated(results, tuple(sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
