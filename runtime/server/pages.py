"""Routes outside the v1 API: the search page and its files, the API docs, health, readiness, metrics."""
from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .errors import error_response
from .openapi import openapi_schema

STATIC = Path(__file__).parent / "static"
_PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                            "style-src 'self'; script-src 'self'; frame-ancestors 'none'"}


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def docs(request: Request) -> Response:
    return FileResponse(STATIC / "docs.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema(request.app.state.dagnn.version))


async def healthz(request: Request) -> Response:
    """The process is up and answering (it may still be loading: see /readyz)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.app.state.dagnn
    if state.status == "ready":
        return JSONResponse({"status": "ready"})
    if state.status == "loading":
        return error_response(503, "loading", "loading the bundle and the index",
                              {"Retry-After": str(state.limits.retry_after_s)})
    return error_response(503, "load_failed", f"the bundle or index could not be loaded: {state.error}")


async def metrics(request: Request) -> Response:
    return Response(request.app.state.dagnn.metrics.render(), media_type=request.app.state.dagnn.metrics.CONTENT_TYPE)


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
