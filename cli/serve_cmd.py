"""``dagnn serve``: the HTTP API and search page (``dagnn_runtime.server``) under uvicorn."""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Optional

import typer

from dagnn_runtime.errors import InputError

from .app import app
from .options import index_opt, open_index_set, token_opt


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most images in one batched model call."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", min=0, help="Longest wait to fill a batch."),
    model_workers: int = typer.Option(1, "--model-workers", min=1, help="Batches run at once (each on its own "
                                      "thread; on CPU try --threads 1 with one worker per core)."),
    max_upload_mb: int = typer.Option(20, "--max-upload-mb", min=1, help="Largest request body."),
    max_in_flight: int = typer.Option(64, "--max-in-flight", min=1, help="API requests answered at once; "
                                      "more get 503 with Retry-After."),
    refresh_s: float = typer.Option(5.0, "--refresh-s", min=0, help="Pick up other writers' saved changes "
                                    "this often (0: never)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error."),
    token: Optional[str] = token_opt,
):
    """Serve search, tagging and index updates over HTTP (API v1 at /v1, docs at /docs, page at /)."""
    try:
        import uvicorn

        from dagnn_runtime.server import Limits, create_app
    except ImportError as exc:
        raise InputError(f"`dagnn serve` needs the [serve] extra (pip install 'dagnn[serve]'): {exc}") from exc
    if not is_loopback(host) and not api_key:
        raise InputError(f"--host {host} is reachable from other machines: give --api-key (or DAGNN_API_KEY)")
    if not bundle.exists():
        raise InputError(f"--bundle {bundle} does not exist")
    indexes = open_index_set(index, token)
    indexes.require()
    if log_level not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    limits = Limits(max_upload_bytes=max_upload_mb * 1024 * 1024, max_in_flight=max_in_flight)
    asgi = create_app(bundle, indexes, uploads=uploads, api_key=api_key, limits=limits, max_batch=max_batch,
                      max_wait_ms=max_wait_ms, model_workers=model_workers, threads=threads, refresh_s=refresh_s)
    config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=10, server_header=False,
                            timeout_keep_alive=75)  # longer than clients keep idle connections: no reuse race
    uvicorn.Server(config).run()  # SIGTERM/SIGINT: stop accepting, finish requests, close the index
