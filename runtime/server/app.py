"""``create_app(bundle, index, ...)``: the ASGI app of ``dagnn serve`` (Starlette).

The bundle and the index load in a background thread at startup, so the process answers at once:
``/healthz`` says it is up, ``/readyz`` and the API answer 503 with ``Retry-After`` until it is ready,
never a 500. Middleware, outermost first: metrics and the last-resort 500 (traceback to the log only),
the body timeout (``connections.BodyTimeout``), the browser policy (``browser``: Host names, writes only
from the server's own origin, CORS only for the origins given), the API key, then the body-size and
in-flight limits.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Match

from ..indexes import IndexSet
from . import browser, pages, routes
from .connections import BodyTimeout
from .errors import ApiError, error_response, exception_handlers
from .limits import InFlight, LimitMiddleware, Limits
from .metrics import Metrics

log = logging.getLogger("dagnn_runtime.server")
PUBLIC = ("/", "/docs", "/openapi.json", "/healthz", "/readyz", "/static/")


class AppState:
    """What the routes share: the service once loaded (``status``: loading | ready | failed)."""

    def __init__(self, limits: Limits, metrics: Metrics, version: str):
        self.limits, self.metrics, self.version = limits, metrics, version
        self.status, self.error, self.service = "loading", None, None

    def require(self):
        if self.status == "ready":
            return self.service
        if self.status == "loading":
            raise ApiError(503, "loading", "the service is loading the bundle and the index: retry shortly",
                           {"Retry-After": str(self.limits.retry_after_s)})
        raise ApiError(503, "load_failed", f"the bundle or index could not be loaded: {self.error}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dagnn")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(bundle=None, index=None, *, searcher=None, uploads=None, api_key: str | None = None,
               limits: Limits | None = None, max_batch: int = 16, max_wait_ms: float = 2.0, model_workers: int = 1,
               threads=None, providers="auto", refresh_s: float = 5.0, hosts=None,
               cors_origins=(), body_timeout_s: float = 10.0) -> Starlette:
    """The app serving ``bundle`` with ``index`` (a location, or a parent holding image/ and text/), or an
    already open ``searcher``. Uploaded images are kept in ``uploads`` (default: beside the index). Every
    ``refresh_s`` seconds the indexes pick up what other writers saved. ``hosts``: the names a ``Host``
    header may give (``browser.bound_names``; the address a connection came to is always one; None: any,
    for whoever binds the app knows its names: ``dagnn serve`` gives them);
    ``cors_origins``: the web origins allowed to call the API from their pages (none: CORS off); a request
    body that stops arriving for ``body_timeout_s`` gets 408."""
    if searcher is None and (bundle is None or index is None):
        raise ValueError("create_app needs a bundle and an index, or an open searcher")
    limits = limits or Limits()
    metrics = Metrics()
    state = AppState(limits, metrics, _version())
    index_set = None if index is None else index if isinstance(index, IndexSet) else IndexSet(index)
    uploads = Path(uploads) if uploads else index_set.uploads() if index_set else _beside(searcher)

    def open_service():
        from ..engine import Searcher
        from .service import Service

        opened = searcher or Searcher.open(bundle, index_set, threads=threads, providers=providers)
        return Service(opened, uploads=uploads, max_batch=max_batch, max_wait_ms=max_wait_ms,
                       model_workers=model_workers,
                       observe_batch=metrics.observe_batch, refresh_s=refresh_s)

    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def load():  # a daemon thread: a shutdown while loading does not wait for it
            started = time.perf_counter()
            try:
                service = open_service()
            except Exception as exc:  # noqa: BLE001 - reported by /readyz and every API call
                log.error("loading %s with index %s failed: %s", bundle, index, exc,
                          exc_info=not _is_known(exc))
                loop.call_soon_threadsafe(_failed, exc)
            else:
                log.info("ready in %.1f s: %s", time.perf_counter() - started, service.info()["indexes"])
                loop.call_soon_threadsafe(_loaded, service)

        def _failed(exc):
            state.status, state.error = "failed", str(exc)
            ready.set()

        def _loaded(service):
            loop.create_task(_start(service))

        async def _start(service):
            await service.start()
            state.service, state.status = service, "ready"
            ready.set()

        threading.Thread(target=load, name="dagnn-load", daemon=True).start()
        try:
            yield
        finally:
            if state.service is not None:
                state.status = "failed"
                state.error = "shutting down"
                await state.service.close()
                log.info("closed the index and the model")

    metrics.gauge("dagnn_index_items", "Items in each index.", lambda: {
        (m,): len(ix) for m, ix in (state.service.searcher.indexes.items() if state.service else [])}, ("modality",))
    metrics.gauge("dagnn_ready", "1 once the bundle and index are loaded.",
                  lambda: {(): 1 if state.status == "ready" else 0})
    in_flight = InFlight()
    metrics.gauge("dagnn_in_flight_requests", "API requests being answered.", lambda: {(): in_flight.n})
    middleware = [Middleware(Observe, metrics=metrics), Middleware(BodyTimeout, timeout_s=body_timeout_s),
                  Middleware(browser.BrowserPolicy, hosts=("*",) if hosts is None else tuple(hosts),
                             cors_origins=tuple(cors_origins))]
    if cors_origins:
        middleware.append(Middleware(browser.cors, origins=tuple(cors_origins)))
    middleware += [Middleware(ApiKey, key=api_key),
                   Middleware(LimitMiddleware, limits=limits, counter=in_flight, on_reject=metrics.rejected.inc)]
    app = Starlette(routes=pages.ROUTES + routes.ROUTES, exception_handlers=exception_handlers(), lifespan=lifespan,
                    middleware=middleware)
    app.state.dagnn = state
    return app


def _is_known(exc: Exception) -> bool:
    from ..errors import DagnnError

    return isinstance(exc, (DagnnError, OSError))


def _beside(searcher) -> Path:
    """An open searcher's uploads folder: beside its first index."""
    location = Path(str(next(iter(searcher.indexes.values())).location))
    return location.with_name(location.name + ".uploads")


class Observe:
    """Counts and times every request by route template; a bug becomes a JSON 500, traceback to the log."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    def _route(self, scope) -> str:
        for route in scope["app"].routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", "other") + ("/…" if route.__class__.__name__ == "Mount" else "")
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [None]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:  # noqa: BLE001 - the one place a bug is logged and answered
            log.error("bug while answering %s %s", scope["method"], scope["path"], exc_info=exc)
            if status[0] is None:
                status[0] = 500
                await error_response(500, "internal", "internal error (a bug: see the server log)")(
                    scope, receive, send)
        finally:
            route = self._route(scope)
            self.metrics.requests.inc(route, scope["method"], str(status[0] or 500))
            self.metrics.latency.observe(time.perf_counter() - start, route)


class ApiKey:
    """With a key set, the API and /metrics need ``Authorization: Bearer <key>``; the page, docs and probes
    stay public (the page asks for the key when the API answers 401)."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or _public(scope["path"]):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", ())).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            return await error_response(401, "unauthorized", "this server needs an API key: send "
                                        "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})(
                scope, receive, send)
        return await self.app(scope, receive, send)


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith("/static/")
