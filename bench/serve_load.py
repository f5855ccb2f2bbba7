"""Load test of ``dagnn serve`` driven by a native client (wrk), so that the figures are the server's.

    python bench/serve_load.py --bundle B --index I --photo PHOTO.jpg [--concurrency 1,8,32] [--seconds 10]

A Python client on the same two cores measured itself: wrk (installed from Debian by this script when it is
missing and it runs as root) takes one thread. The server starts on 127.0.0.1 (access log off); per scenario
(``/healthz``, text search, image search, tag) and concurrency wrk runs ``--seconds``, and the table shows
q/s, p50/p99, errors (non-2xx answers and socket errors) and the server's RSS. The image encoder's own
throughput (batches of ``--max-batch``, the server's threads) is measured in this process while the server
is idle, for the image targets. The load average is printed at the start and the end: a figure measured on
a busy machine is not one to publish. Targets (issue 27) are ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_average, usable_cores  # noqa: E402

SERVE = "import dagnn_cli.serve_cmd; from dagnn_cli.app import main; main()"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it (Debian: apt-get install wrk)")
    print("installing wrk from Debian …", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk did not install")


def start_server(bundle, index, extra: list, source_tree: Path | None = None) -> tuple:
    """``(process, url)`` of a ``dagnn serve`` once ready; ``source_tree``: another checkout of dagnn whose
    packages the server imports instead of the installed ones (``--baseline``)."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    if source_tree is not None:
        env["PYTHONPATH"] = str(package_links(source_tree))
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--bundle", str(bundle), "--index", str(index),
                             "--port", str(port), "--no-access-log", "--log-level", "warning", *extra], env=env)
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


def package_links(tree: Path) -> Path:
    """A folder where dagnn's three packages of ``tree`` (a checkout, e.g. ``git worktree add OLD COMMIT``)
    are importable under their names, to put first on PYTHONPATH."""
    folder = Path(tempfile.mkdtemp(prefix="dagnn-baseline-"))
    for name, sub in (("dagnn_runtime", "runtime"), ("dagnn_cli", "cli"), ("dagnn_export", "dagnn_export")):
        (folder / name).symlink_to(Path(tree).resolve() / sub)
    return folder


def scripts(folder: Path, photo: bytes, text: str, k: int) -> dict:
    """Scenario -> (path, wrk Lua script or None). Bodies are files the scripts read once."""
    boundary = uuid.uuid4().hex
    def multipart(fields: dict) -> bytes:
        out = b""
        for name, value in fields.items():
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
            if isinstance(value, bytes):
                out += (head + '; filename="q.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + value + b"\r\n"
            else:
                out += (head + "\r\n\r\n" + value + "\r\n").encode()
        return out + f"--{boundary}--\r\n".encode()

    bodies = {"text_search": (b"application/json", json.dumps({"text": text, "target": "image", "k": k}).encode()),
              "image_search": (f"multipart/form-data; boundary={boundary}".encode(),
                               multipart({"image": photo, "target": "image", "k": str(k)})),
              "tag": (f"multipart/form-data; boundary={boundary}".encode(), multipart({"image": photo}))}
    out = {"healthz": ("/healthz", None)}
    for name, (kind, body) in bodies.items():
        (folder / f"{name}.body").write_bytes(body)
        lua = folder / f"{name}.lua"
        lua.write_text(f'local f = io.open("{folder / (name + ".body")}", "rb")\nwrk.body = f:read("*all")\n'
                       f'f:close()\nwrk.method = "POST"\nwrk.headers["Content-Type"] = "{kind.decode()}"\n')
        out[name] = ("/v1/tag" if name == "tag" else "/v1/search", lua)
    return out


def run_wrk(wrk: str, url: str, script, connections: int, seconds: int, threads: int = 1) -> dict:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(label):
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    socket_errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    return {"qps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"),
            "p99": ms("99%"), "errors": socket_errors + non2xx, "requests": int(re.search(r"(\d+) requests in", out)[1])}


def rss_mb(pid: int) -> tuple[float, float]:
    """RSS and peak RSS (MB) of the server: with ``--workers N``, of its workers and the parent together."""
    def tree(p: int) -> list:
        children = []
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            children += [int(c) for c in task.read_text().split()]
        return [p] + [q for c in children for q in tree(c)]

    rss = peak = 0.0
    for p in tree(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines()
                          if ":" in line)
        except FileNotFoundError:
            continue
        rss += int(fields["VmRSS"].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return rss, peak


def encoder_reference(bundle, photo: Path, batch: int, threads: int | None, seconds: float = 5.0) -> dict:
    """The image encoder's own photos/s at ``batch`` and ms at batch 1, with the server's thread count."""
    import numpy as np

    import dagnn_runtime as dr
    from dagnn_runtime.preprocess import load_image

    model = dr.load(bundle, threads=threads)
    pixels = load_image(photo, model.image_size)
    out = {}
    for n in (1, batch):
        stack = np.stack([pixels] * n)
        for _ in range(3):
            model.encode_pixels(stack)
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            model.encode_pixels(stack)
            times.append(time.perf_counter() - t)
        out[n] = float(np.median(times))
    return {"ms_1": out[1] * 1e3, "per_s": batch / out[batch]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--photo", required=True, type=Path, help="The photo image searches and tagging send.")
    ap.add_argument("--text", default="sky, clouds, sunset")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--scenarios", default="healthz,text_search,image_search,tag")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--server-arg", action="append", default=[], help="Passed to dagnn serve (repeatable).")
    ap.add_argument("--baseline", type=Path, help="Another checkout (git worktree add OLD COMMIT): its server and "
                                                 "this one are measured alternately, A B A B …, instead")
    ap.add_argument("--rounds", type=int, default=5, help="With --baseline: rounds per scenario and concurrency.")
    args = ap.parse_args(argv)
    wrk = ensure_wrk()
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.baseline is not None:
        return compare(args, wrk, levels)
    threads = next((int(a.split("=")[1]) for a in args.server_arg if a.startswith("--threads=")), None)
    print(f"# dagnn serve under wrk ({subprocess.run([wrk, '-v'], capture_output=True, text=True).stdout.split()[1]},"
          f" 1 thread) on {platform.processor() or platform.machine()}, {usable_cores()} cores; "
          f"load average at start {load_average():.2f}", flush=True)
    encoder = encoder_reference(args.bundle, args.photo, args.max_batch, threads)
    proc, url = start_server(args.bundle, args.index, args.server_arg + ["--max-batch", str(args.max_batch)])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plans = scripts(Path(tmp), args.photo.read_bytes(), args.text, args.k)
            for name in args.scenarios.split(","):
                path, script = plans[name]
                run_wrk(wrk, url + path, script, 4, 2)  # warm-up
                for c in levels:
                    row = run_wrk(wrk, url + path, script, c, args.seconds)
                    rows.append({"scenario": name, "c": c, **row, "rss": rss_mb(proc.pid)[0]})
                    print(f"{name:<13} c={c:<3} {row['qps']:>8.1f} q/s  p50 {row['p50']:7.2f} ms  p99 "
                          f"{row['p99']:7.2f} ms  errors {row['errors']}", flush=True)
        peak = rss_mb(proc.pid)[1]
    finally:
        proc.terminate()
        proc.wait(60)
    print_report(rows, encoder, levels, peak, args)
    return 0


def compare(args, wrk: str, levels: list) -> int:
    """This checkout's server against ``--baseline``'s, alternated round by round on the same machine."""
    print(f"# this checkout against {args.baseline}, alternated, {args.rounds} rounds of {args.seconds} s; "
          f"load average at start {load_average():.2f}", flush=True)
    extra = args.server_arg + ["--max-batch", str(args.max_batch)]
    servers = {"baseline": start_server(args.bundle, args.index, extra, args.baseline),
               "this": start_server(args.bundle, args.index, extra)}
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plans = scripts(Path(tmp), args.photo.read_bytes(), args.text, args.k)
            for name in args.scenarios.split(","):
                path, script = plans[name]
                for _, url in servers.values():
                    run_wrk(wrk, url + path, script, 4, 2)  # warm-up
                for c in levels:
                    for r in range(args.rounds):
                        for side in (("baseline", "this") if r % 2 == 0 else ("this", "baseline")):
                            row = run_wrk(wrk, servers[side][1] + path, script, c, args.seconds)
                            results.setdefault((name, c, side), []).append(row)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)

    print_alternated(results, ("baseline", "this"))
    return 0


def print_alternated(results: dict, sides: tuple) -> None:
    """The table of an A B A B comparison: ``results`` maps (scenario, concurrency, side) to wrk rows, one per
    round; each cell is the median (min–max) over rounds, side ``sides[0]`` before ``sides[1]``."""
    import statistics

    def cell(rows, key, fmt):
        values = [r[key] for r in rows]
        return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    a, b = sides
    print(f"\n| scenario | c | {a} q/s | {b} q/s | {a} p99 ms | {b} p99 ms | errors |\n|---|---|---|---|---|---|---|")
    for (name, c, side), rows in results.items():
        if side == b:
            base = results[(name, c, a)]
            print(f"| {name} | {c} | {cell(base, 'qps', '{:.0f}')} | {cell(rows, 'qps', '{:.0f}')} | "
                  f"{cell(base, 'p99', '{:.1f}')} | {cell(rows, 'p99', '{:.1f}')} | "
                  f"{sum(r['errors'] for r in base + rows)} |")
    print(f"\nmedian (min–max) over rounds; load average at end {load_average():.2f}")


def print_report(rows: list, encoder: dict, levels: list, peak: float, args) -> None:
    at = {(r["scenario"], r["c"]): r for r in rows}
    print("\n| scenario | concurrency | q/s | p50 ms | p99 ms | errors | server RSS MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['c']} | {r['qps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['rss']:.0f} |")
    print(f"\nimage encoder alone: {encoder['per_s']:.0f} photos/s at batch {args.max_batch}, "
          f"{encoder['ms_1']:.2f} ms at batch 1; server peak RSS {peak:.0f} MB; load average at end "
          f"{load_average():.2f}")
    top = max(levels)
    checks = []
    health, text, image = at.get(("healthz", top)), at.get(("text_search", top)), at.get(("image_search", top))
    if health and text:
        checks.append((f"text search >= 40 % of /healthz at c={top}", text["qps"] / health["qps"], 0.40, ">="))
        checks.append((f"text search p99 at c={top} (ms)", text["p99"], 40.0, "<="))
    if ("text_search", 1) in at:
        checks.append(("text search one at a time p50 (ms)", at[("text_search", 1)]["p50"], 1.5, "<="))
    if image:
        checks.append((f"image search >= 80 % of the encoder at c={top}", image["qps"] / encoder["per_s"], 0.80, ">="))
    if ("image_search", 1) in at:
        checks.append(("image search one at a time p50 (ms)", at[("image_search", 1)]["p50"],
                       encoder["ms_1"] + 3.0, "<="))
    for r in rows:
        checks.append((f"{r['scenario']} c={r['c']}: p99 <= 1.5 x c / q/s (ms)", r["p99"],
                       1.5 * r["c"] / r["qps"] * 1e3, "<="))
        checks.append((f"{r['scenario']} c={r['c']}: errors", r["errors"], 0, "<="))
    print("\n| target | measured | bound | met |\n|---|---|---|---|")
    for what, value, bound, op in checks:
        met = value >= bound if op == ">=" else value <= bound
        print(f"| {what} | {value:.3g} | {op} {bound:.3g} | {'yes' if met else '**missed**'} |")


if __name__ == "__main__":
    sys.exit(main())
