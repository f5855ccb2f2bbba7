"""``dagnn serve --workers 2`` on 127.0.0.1: a parent that binds the socket and forks two workers. Which worker
answered a request is read from /proc (the worker process holding the server end of the client's
connection), not from the API. Every wait here is bounded."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")
if not hasattr(os, "fork") or not Path("/proc/self/task").is_dir():
    pytest.skip("--workers needs fork; these tests read /proc", allow_module_level=True)

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import SERVE, build_index, free_port, serve  # noqa: E402


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, data_dir):
    return build_index(model, data_dir, tmp_path_factory.mktemp("index") / "index")


def workers_of(parent: int) -> list:
    try:
        return [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    except FileNotFoundError:
        return []


def processes_on(port: int) -> list:
    """Every process whose command line names ``--port PORT`` (the parent and its forked workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"\0--port\0{port}\0" in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def socket_owner(pids, server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server end of the connection from ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if (local, remote) == (server_port, client_port):
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                pass
    return None


def ask(server, method: str, path: str, body=None, headers=None):
    """One request on a fresh connection: (status, body bytes, the worker that answered)."""
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        data = res.read()
        owner = socket_owner(workers_of(server.proc.pid), port, conn.sock.getsockname()[1])
        return res.status, data, owner
    finally:
        conn.close()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def both_ready(server) -> None:
    wait_until(lambda: server.log().count("dagnn_runtime.server: ready in") >= 2, 60, server.log())


def png(color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), color, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict, image: bytes) -> tuple:
    boundary = "dagnn-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def run_serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SERVE, "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def two(tmp_path_factory, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path_factory.mktemp("logs"), "--workers", "2") as srv:
        both_ready(srv)
        yield srv
    assert "Traceback" not in srv.log(), srv.log()


def test_requests_over_fresh_connections_are_answered_by_both_workers(two):
    workers = workers_of(two.proc.pid)
    assert len(workers) == 2, two.log()
    assert os.listdir(f"/proc/{two.proc.pid}/task") == [str(two.proc.pid)]  # the parent runs no thread
    seen, statuses, started = set(), [], time.monotonic()
    while (len(seen) < 2 or len(statuses) < 40) and time.monotonic() - started < 30:
        status, _, owner = ask(two, "GET", "/v1/labels")
        statuses.append(status)
        seen.add(owner)
    assert set(statuses) == {200} and seen == set(workers), (statuses, seen, workers)
    # /metrics is per worker: each counts the requests it answered, and together they make the whole
    counts = {}

    def scrape():
        status, data, owner = ask(two, "GET", "/metrics")
        counts[owner] = labels_answered(data.decode())
        return len(counts) == 2

    wait_until(scrape, 30, "a /metrics scrape from each worker")
    assert sum(counts.values()) == len(statuses) and all(counts.values()), counts


def labels_answered(metrics: str) -> int:
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("dagnn_http_requests_total{") and 'route="/v1/labels"' in line)


def test_an_item_added_through_one_worker_is_found_and_served_by_every_worker(two):
    image = png((250, 40, 200))
    body, headers = multipart({"id": "workers/1", "metadata": '{"note": "magenta"}'}, image)
    status, data, adder = ask(two, "POST", "/v1/items", body, headers)
    assert status == 201, data
    found_by, served_by, started = set(), set(), time.monotonic()
    while (found_by | served_by) != set(workers_of(two.proc.pid)) or found_by != served_by:
        assert time.monotonic() - started < 30, (found_by, served_by)
        body, headers = multipart({"target": "image", "k": "3"}, image)
        status, data, owner = ask(two, "POST", "/v1/search", body, headers)
        assert status == 200 and json.loads(data)["results"][0]["id"] == "workers/1", data
        found_by.add(owner)
        status, data, owner = ask(two, "GET", "/v1/items/workers%2F1/image")
        assert status == 200 and data == image
        served_by.add(owner)
    assert adder in found_by and len(found_by) == 2


def test_sigterm_stops_every_worker_and_the_parent_exits_0(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path, "--workers", "2") as srv:
        both_ready(srv)
        port = int(srv.url.rsplit(":", 1)[1])
        workers = workers_of(srv.proc.pid)
        assert len(workers) == 2 and sorted(processes_on(port)) == sorted([srv.proc.pid, *workers])
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.log()
    assert processes_on(port) == [] and not any(Path(f"/proc/{w}").exists() for w in workers)
    log = srv.log()
    assert log.count("closed the index and the model") == 2 and "Traceback" not in log, log


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path, "--workers", "2") as srv:
        both_ready(srv)
        first = workers_of(srv.proc.pid)
        os.kill(first[0], signal.SIGKILL)
        now = wait_until(lambda: len(w := workers_of(srv.proc.pid)) == 2 and first[0] not in w and w, 30,
                         srv.log())
        wait_until(lambda: srv.log().count("dagnn_runtime.server: ready in") >= 3, 30, srv.log())
        assert f"worker {first[0]} ended with signal SIGKILL; starting another" in srv.log()
        seen, started = set(), time.monotonic()
        while seen != set(now):
            assert time.monotonic() - started < 30, (seen, now)
            status, _, owner = ask(srv, "GET", "/v1/labels")
            assert status == 200
            seen.add(owner)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.log()


def test_workers_that_keep_dying_stop_the_service(tmp_path, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path, "--workers", "2") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while srv.proc.poll() is None and time.monotonic() < deadline:
            for pid in workers_of(srv.proc.pid):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        assert srv.proc.wait(10) == 1, srv.log()
    assert "error: workers keep dying (5 within 30 s): stopped" in srv.log()
    assert processes_on(port) == []


def test_bad_options_are_refused_in_one_line_before_any_worker(tmp_path, bundle_dir, index_dir):
    port = str(free_port())
    zero = run_serve("--bundle", str(bundle_dir), "--index", str(index_dir), "--port", port, "--workers", "0")
    assert zero.returncode == 2 and "--workers" in zero.stderr
    for args, message in [(("--index", str(tmp_path / "none")), "no index at"),
                          (("--index", str(index_dir), "--log-level", "loud"), "--log-level must be"),
                          (("--index", str(tmp_path / "lite.db")), "Milvus Lite index opens in one process")]:
        res = run_serve("--bundle", str(bundle_dir), "--port", port, "--workers", "2", *args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1 and message in lines[0], res.stderr
        assert lines[0].startswith("error: ") and processes_on(int(port)) == []


def test_a_worker_that_cannot_start_is_one_error_line_and_no_orphan(tmp_path, bundle_dir):
    pytest.importorskip("pymilvus", reason="needs the [milvus] extra")
    port, nobody = free_port(), free_port()  # a Milvus server URI where nothing listens: each worker connects
    res = run_serve("--bundle", str(bundle_dir), "--index", f"http://127.0.0.1:{nobody}", "--uploads",
                    str(tmp_path / "uploads"), "--port", str(port), "--workers", "2", "--no-access-log")
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 1 and len(errors) == 1 and f"127.0.0.1:{nobody}" in errors[0], res.stderr
    assert "Traceback" not in res.stderr and processes_on(port) == []
