"""Run a real ``dagnn serve`` (uvicorn) on 127.0.0.1 for tests, and build the small index it serves."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest

SERVE = "import dagnn_cli.serve_cmd; from dagnn_cli.app import main; main()"
# uvicorn's two HTTP/1.1 parsers, for tests of what the connection guards do on each (DAGNN_HTTP_PARSER)
PARSERS = [pytest.param("httptools", marks=pytest.mark.skipif(find_spec("httptools") is None,
                                                            reason="httptools is not installed")), "h11"]


def build_index(model, data_dir: Path, out: Path) -> Path:
    """``out/image`` and ``out/text`` indexes of the factory data set, through the engine's ingest."""
    from dagnn_runtime.indexes import open_index
    from dagnn_runtime.ingest import ingest, sources_from_data

    for source in sources_from_data(data_dir):
        index = open_index(out / source.modality, model=model, modality=source.modality, create=True)
        ingest(model, source, index)
        index.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(bundle, index, log_dir: Path, *args: str, ready: bool = True, env: dict | None = None, timeout: float = 60,
          open_files: int | None = None, parser: str | None = None):
    """A ``dagnn serve`` subprocess on a free loopback port; stopped with SIGTERM (graceful) at the end.
    ``open_files``: its open-file limit (soft and hard), lowered before it starts. ``parser``: uvicorn's HTTP
    parser, ``httptools`` or ``h11`` (default: the one ``dagnn serve`` picks)."""
    if parser is not None:
        env = {**(env or {}), "DAGNN_HTTP_PARSER": parser}
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-c", SERVE, "serve", "--bundle", str(bundle), "--index", str(index),
           "--port", str(port), "--no-access-log", *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
                                if open_files else None)
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_for(server, "/readyz" if ready else "/healthz", timeout)
        assert parser is None or f"HTTP parser {parser}," in server.log(), server.log()
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def assert_stopped_cleanly(server: Server) -> None:
    """After ``serve`` ended: it exited as SIGTERM asks (uvicorn re-raises SIGTERM once shut down) and logged
    no traceback."""
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()
    assert "Traceback" not in server.log(), server.log()


def wait_for(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"dagnn serve exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{server.url}{path} not 200 after {timeout} s:\n{server.log()}")


@contextmanager
def served_factory_index(tmp_path_factory, bundle_dir, model, data_dir, name: str, *args: str):
    """A real ``dagnn serve`` over the factory data set's indexes, for a test module; the module fails if
    the server logged a traceback."""
    index = build_index(model, data_dir, tmp_path_factory.mktemp(f"{name}-index") / "index")
    with serve(bundle_dir, index, tmp_path_factory.mktemp(f"{name}-logs"), *args) as srv:
        yield srv
    assert "Traceback" not in srv.log(), srv.log()
