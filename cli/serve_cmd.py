"""``dagnn serve``: the HTTP API and search page (``dagnn_runtime.server``) under uvicorn."""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.errors import InputError, install_hint

from .app import app
from .options import checked_threads, index_opt, open_index_set, token_opt


def is_loopback(host: str) -> bool:
    from dagnn_runtime.server.browser import is_loopback as loopback

    return loopback(host)


def bind(host: str, port: int):
    """A socket bound to --host and --port, or a one-line refusal of a --host that does not resolve or a
    --port another server holds (uvicorn would say so only after start-up, over several log lines)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}): is another server using it? "
                         "Pick another --port") from None
    return sock


def check_listen(host: str, port: int) -> None:
    """``bind``'s refusals, before uvicorn binds the address itself (one process)."""
    bind(host, port).close()


def http_protocol() -> tuple[type, str]:
    """uvicorn's HTTP/1.1 protocol: on httptools (C, in the [serve] extra) where it imports, else on h11 (pure
    Python, uvicorn's own). DAGNN_HTTP_PARSER=h11 picks h11 anyway (tests run the guards on both)."""
    if os.environ.get("DAGNN_HTTP_PARSER", "").lower() != "h11":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            return HttpToolsProtocol, "httptools"
        except ImportError:
            pass
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol, "h11"


def event_loop() -> str:
    """uvloop where it imports (the [serve] extra, not on Windows), else asyncio's own loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@app.command()
def serve(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder or .dagnn archive."),
    index: str = index_opt(),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; other than loopback needs --api-key."),
    port: int = typer.Option(8080, "--port", min=0, max=65535),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="DAGNN_API_KEY", show_envvar=True,
                                          help="Require 'Authorization: Bearer KEY' on the API."),
    uploads: Optional[Path] = typer.Option(None, "--uploads", help="Folder for images added through the API "
                                           "(default: INDEX/uploads, or INDEX.uploads beside a single index)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads of each worker "
                                          "(default: onnxruntime's choice; with --workers N, cores // N each)."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most images in one batched model call."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", min=0, help="Longest wait to fill a batch."),
    model_workers: int = typer.Option(1, "--model-workers", min=1, help="Batches run at once (each on its own "
                                      "thread; on CPU try --threads 1 with one worker per core)."),
    max_upload_mb: int = typer.Option(20, "--max-upload-mb", min=1, help="Largest request body."),
    max_in_flight: int = typer.Option(64, "--max-in-flight", min=1, help="API requests answered at once; "
                                      "more get 503 with Retry-After."),
    refresh_s: float = typer.Option(5.0, "--refresh-s", min=0, help="Pick up other writers' saved changes "
                                    "this often (0: never)."),
    allowed_host: Optional[List[str]] = typer.Option(
        None, "--allowed-host", help="Another name browsers may reach the server by (repeatable; '*': any). "
        "Requests naming any other Host get 421 (DNS rebinding); the --host value, the address a client "
        "connected to and, on loopback, localhost, 127.0.0.1 and ::1 are always accepted."),
    cors_origin: Optional[List[str]] = typer.Option(
        None, "--cors-origin", help="A web origin (https://app.example:8443) whose pages may call the API "
        "(repeatable; '*' needs --api-key). Default: none, and writes only from the server's own page."),
    max_connections: Optional[int] = typer.Option(
        None, "--max-connections", min=1, help="Open connections at most; past it a new one replaces the "
        "longest idle one, or gets 503. Default: what the open-file limit (ulimit -n) leaves."),
    header_timeout_s: float = typer.Option(10.0, "--header-timeout-s", min=0.1, help="A request head must "
                                           "arrive within this (else 408 and the connection is closed)."),
    body_timeout_s: float = typer.Option(10.0, "--body-timeout-s", min=0.1, help="A request body that stops "
                                         "arriving for this long gets 408 and the connection is closed."),
    send_timeout_s: float = typer.Option(60.0, "--send-timeout-s", min=0.1, help="Cut off a client that reads "
                                         "nothing of an answer for this long."),
    keep_alive_s: float = typer.Option(75.0, "--keep-alive-s", min=0.1, help="Close a connection idle this long "
                                       "between requests (longer than clients keep idle ones: no reuse race)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes serving the one socket, each with its "
                                "own model, index, limits and /metrics (N times the memory). Needs fork."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error."),
    token: Optional[str] = token_opt,
):
    """Serve search, tagging and index updates over HTTP (API v1 at /v1, docs at /docs, page at /)."""
    try:
        import uvicorn

        from dagnn_runtime.server import Limits, browser, create_app
        from dagnn_runtime.server.connections import ConnectionLimits, descriptor_budget, guarded_protocol
        from dagnn_runtime.server.logs import limit_logging
        from dagnn_runtime.server.service import request_threads

        from .workers import supervise
    except ImportError as exc:
        raise InputError(f"`dagnn serve` needs the [serve] extra ({exc}): {install_hint('serve')}") from exc
    if not is_loopback(host) and not api_key:
        raise InputError(f"--host {host} is reachable from other machines: give --api-key (or DAGNN_API_KEY)")
    try:
        hosts = browser.bound_names(host, [browser.check_host_option(h) for h in allowed_host or ()])
        origins = [browser.check_origin_option(o) for o in cors_origin or ()]
        # descriptors kept for other things than connections: the index and model files, the log, and per
        # request thread a photo being read, per request in flight an upload spooled to disk
        reserve = 64 + 3 * request_threads(max_batch, model_workers) + max_in_flight
        max_connections, backlog = descriptor_budget(reserve, max_connections)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if "*" in origins and not api_key:
        raise InputError("--cors-origin '*' lets every web page write to the index: give --api-key too")
    threads = checked_threads(threads)
    if workers > 1 and not hasattr(os, "fork"):
        raise InputError("--workers above 1 needs os.fork, which this platform lacks: use --workers 1")
    if workers > 1 and threads is None:
        from dagnn_runtime.execution import usable_cores

        threads = max(1, usable_cores() // workers)  # the workers together use the machine's cores
    if uploads is not None and uploads.exists() and not uploads.is_dir():
        raise InputError(f"--uploads {uploads} is a file, not a folder")
    if not (bundle / "manifest.json").is_file() and not zipfile.is_zipfile(bundle):
        # what is no bundle at all is refused here; a damaged one is the server's to report (/readyz)
        raise InputError(f"--bundle {bundle} is not a bundle (no manifest.json in it, not a .dagnn archive)")
    indexes = open_index_set(index, token)
    # an hnsw location is checked with a look at its files; Milvus connects, which N workers do after the fork
    connects = indexes.backend.name != "hnsw"
    if workers > 1 and connects and "://" not in indexes.location:
        raise InputError(f"--workers {workers}: a Milvus Lite index opens in one process at a time; use "
                         "--workers 1, or a Milvus server")
    if workers == 1 or not connects:
        indexes.require()
    if log_level not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    if workers == 1:
        check_listen(host, port)
    else:
        sock = bind(host, port)
        sock.listen(backlog)  # connections queue from now on; the workers accept them once they serve
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    limits = Limits(max_upload_bytes=max_upload_mb * 1024 * 1024, max_in_flight=max_in_flight)
    base, parser = http_protocol()
    loop = event_loop()
    protocol = guarded_protocol(base, ConnectionLimits(max_connections, header_timeout_s, body_timeout_s,
                                                       send_timeout_s))
    server_log = logging.getLogger("dagnn_runtime.server")
    server_log.info("HTTP parser %s, event loop %s", parser, loop)
    server_log.info("at most %d connections (backlog %d)%s", max_connections, backlog,
                    f" per worker, {workers} workers on http://{host}:{port}" if workers > 1 else "")

    class Server(uvicorn.Server):
        rate = None
        on_started = None

        async def startup(self, sockets=None):
            self.rate = limit_logging()  # on the handlers uvicorn.Config set up, once serving
            await super().startup(sockets)
            if self.started and self.on_started is not None:
                self.on_started()

        async def shutdown(self, sockets=None):
            await super().shutdown(sockets)
            if self.rate is not None:
                self.rate.flush()  # counts of suppressed lines (uvicorn then re-raises SIGTERM: no finally runs)

    def serve_here(on_started=None) -> None:
        """This process serves: its own app, model and index (with --workers, one forked worker)."""
        if workers > 1 and connects:
            indexes.require()
        asgi = create_app(bundle, indexes, uploads=uploads, api_key=api_key, limits=limits, max_batch=max_batch,
                          max_wait_ms=max_wait_ms, model_workers=model_workers, threads=threads,
                          refresh_s=refresh_s, hosts=hosts, cors_origins=origins, body_timeout_s=body_timeout_s)
        # the cap is enforced as connections open (guarded_protocol), not with uvicorn's limit_concurrency: that
        # answers 503 to requests but keeps every connection, so it cannot keep the process under its limit
        # no WebSocket routes: ws="none" keeps an Upgrade request from taking its connection out of the guards
        config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level, access_log=access_log,
                                timeout_graceful_shutdown=10, server_header=False, http=protocol,
                                backlog=backlog, timeout_keep_alive=keep_alive_s, loop=loop, ws="none")
        server = Server(config)
        server.on_started = on_started
        server.run(sockets=None if workers == 1 else [sock])  # SIGTERM/SIGINT: finish requests, close the index

    if workers == 1:
        serve_here()
    else:
        try:
            supervise(workers, serve_here)  # forks before any model, index or thread is opened
        finally:
            sock.close()
