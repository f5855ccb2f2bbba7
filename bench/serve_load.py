"""Load test of ``dagnn serve``: q/s and latency percentiles per route and concurrency, errors counted.

    python bench/serve_load.py --bundle B --index I --photos DIR [--requests 3000] [--concurrency 1,8,32,64]

Starts ``dagnn serve`` on 127.0.0.1 (access log off) over a temporary copy of the index (the mix adds
items), then per concurrency sends ``--requests`` requests mixing image search, text search, tag and add
(``--mix``), and with ``--alone N`` also N requests of each route alone (its capacity). The client runs on
the same machine (asyncio + httpx) and takes a share of the CPU: the load average is printed at the start
and at the end. Text queries are tag sets read back from the text index, so every one is valid.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad  # noqa: E402

SERVE = "import dagnn_cli.serve_cmd; from dagnn_cli.app import main; main()"
ROUTES = ("image_search", "text_search", "tag", "add")


def start_server(bundle, index, *extra: str):
    """``(process, url)`` of a ``dagnn serve`` on a free loopback port, once /readyz answers 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--bundle", str(bundle), "--index", str(index),
                             "--port", str(port), "--no-access-log", "--log-level", "warning", *extra])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"dagnn serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("dagnn serve did not become ready in 300 s")


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


class Load:
    """The requests of each route, against one server."""

    def __init__(self, client: httpx.AsyncClient, photos: list, texts: list, k: int = 10):
        self.client, self.photos, self.texts, self.k = client, photos, texts, k
        self._ids = itertools.count()
        self._run = f"{os.getpid()}-{int(time.time())}"

    def call(self, route: str, i: int):
        photo = self.photos[i % len(self.photos)]
        if route == "image_search":
            return self.client.post("/v1/search", files={"image": ("q.jpg", photo)},
                                    data={"target": "image", "k": str(self.k)})
        if route == "text_search":
            return self.client.post("/v1/search", json={"text": self.texts[i % len(self.texts)], "target": "image",
                                                        "k": self.k})
        if route == "tag":
            return self.client.post("/v1/tag", files={"image": ("q.jpg", photo)})
        return self.client.post("/v1/items", files={"image": ("p.jpg", photo)},
                                data={"id": f"load-{self._run}-{next(self._ids)}"})


async def run_phase(load: Load, plan: list, concurrency: int) -> tuple:
    """Send the routes in ``plan`` with ``concurrency`` workers; returns (wall seconds, [(route, status, s)])."""
    todo, results = iter(enumerate(plan)), []

    async def worker():
        for i, route in todo:
            start = time.perf_counter()
            try:
                status = (await load.call(route, i)).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            results.append((route, status, time.perf_counter() - start))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, results


def summarise(wall: float, results: list) -> dict:
    """Per route (and "all"): n, q/s, p50/p95/p99 in ms, errors (anything but 200/201), 5xx."""
    rows = {}
    for route in [*ROUTES, "all"]:
        mine = [r for r in results if route == "all" or r[0] == route]
        if not mine:
            continue
        lat = np.array([r[2] for r in mine]) * 1000
        bad = [r for r in mine if r[1] not in (200, 201)]
        rows[route] = {"n": len(mine), "qps": len(mine) / wall, "p50": np.percentile(lat, 50),
                       "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99), "errors": len(bad),
                       "5xx": sum(1 for r in bad if isinstance(r[1], int) and r[1] >= 500),
                       "kinds": sorted({str(r[1]) for r in bad})}
    return rows


def print_table(title: str, table: list) -> None:
    print(f"\n{title}")
    print(f"{'conc':>5} {'route':<13} {'n':>6} {'q/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for conc, rows in table:
        for route, r in rows.items():
            kinds = f"  ({', '.join(r['kinds'])})" if r["kinds"] else ""
            print(f"{conc:>5} {route:<13} {r['n']:>6} {r['qps']:>8.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} "
                  f"{r['p99']:>8.1f} {r['errors']:>7}{kinds}")


def load_photos(folder: Path, n: int) -> list:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not files:
        sys.exit(f"no .jpg/.png photos under {folder}")
    return [p.read_bytes() for p in files]


async def query_texts(client: httpx.AsyncClient, photos: list, n: int = 50) -> list:
    """Known-good text queries: the tags of text items found by a few image searches."""
    texts = []
    for photo in photos[:10]:
        res = await client.post("/v1/search", files={"image": ("q.jpg", photo)}, data={"target": "text", "k": "20"})
        if res.status_code == 200:
            texts += [", ".join(h["metadata"]["tags"][:4]) for h in res.json()["results"] if h["metadata"].get("tags")]
    if not texts:
        sys.exit("no text index to draw text queries from")
    return texts[:n]


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def main_async(args, url: str) -> None:
    limits = httpx.Limits(max_connections=max(args.concurrency) + 8, max_keepalive_connections=max(args.concurrency) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        photos = load_photos(Path(args.photos), args.photo_count)
        texts = await query_texts(client, photos)
        load = Load(client, photos, texts, k=args.k)
        weights = {name: float(w) for name, w in (x.split("=") for x in args.mix.split(","))}
        rng = random.Random(0)
        await run_phase(load, ["image_search", "text_search", "tag"] * 20, 8)  # warm-up
        mixed, alone = [], []
        for conc in args.concurrency:
            plan = rng.choices(list(weights), weights=list(weights.values()), k=args.requests)
            mixed.append((conc, summarise(*await run_phase(load, plan, conc))))
            print(f"concurrency {conc}: {mixed[-1][1]['all']['qps']:.1f} q/s mixed ({load_line()})",
                  file=sys.stderr, flush=True)
            for route in (ROUTES[:3] if args.alone else ()):  # adds alone: bounded by saves, as in the mix
                alone.append((conc, summarise(*await run_phase(load, [route] * args.alone, conc))))
        info = (await client.get("/v1/info")).json()
    print_table(f"mixed ({args.mix}), {args.requests} requests per concurrency", mixed)
    if alone:
        print_table(f"each route alone, {args.alone} requests", [(c, {k: v for k, v in rows.items() if k != "all"})
                                                                  for c, rows in alone])
    print(f"\nindex sizes at the end: { {m: i['items'] for m, i in info['indexes'].items()} }")
    total_5xx = sum(r["5xx"] for _, rows in mixed + alone for r in rows.values() if _ is not None)
    print(f"5xx answers: {total_5xx}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle")
    ap.add_argument("--index")
    ap.add_argument("--url", help="Test this running server instead of starting one (it will receive adds).")
    ap.add_argument("--photos", required=True, help="Folder of query photos (also the photos added).")
    ap.add_argument("--photo-count", type=int, default=200)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    ap.add_argument("--mix", default="image_search=3,text_search=4,tag=2,add=1")
    ap.add_argument("--alone", type=int, default=0, help="Also N requests of each search/tag route alone per "
                    "concurrency (its capacity).")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--server-args", default="", help="Extra `dagnn serve` options, e.g. '--max-batch 8'.")
    args = ap.parse_args()
    print(f"start: {load_line()}")
    print(f"command: {' '.join(sys.argv)}")
    others = OtherLoad()
    if args.url:
        asyncio.run(main_async(args, args.url))
    else:
        if not (args.bundle and args.index):
            ap.error("give --bundle and --index (or --url)")
        with tempfile.TemporaryDirectory(prefix="dagnn-load-") as tmp:
            index = Path(tmp) / "index"
            shutil.copytree(args.index, index)
            proc, url = start_server(args.bundle, index, *args.server_args.split())
            try:
                asyncio.run(main_async(args, url))
            finally:
                stop_server(proc)
    print(f"end: {load_line()} (with this bench); other processes {others.cores():.2f} cores")


if __name__ == "__main__":
    main()
