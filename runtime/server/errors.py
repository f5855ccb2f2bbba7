"""The API's one error shape, ``{"error": {"code", "message"}}``, and how exceptions map onto it.

Problems with a request are 4xx with a code a client can branch on and a message a person can read.
A 500 means a bug: its traceback goes to the log, never into the response.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import DagnnError, ImageInputError, InputError, MismatchError

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_input",
               429: "too_many_requests", 503: "unavailable"}


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a stable ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def shorten(value, limit: int = 80) -> str:
    """At most ``limit`` characters of a client's input, for quoting it back in a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def as_api_error(exc: Exception) -> ApiError:
    """The ApiError for an ApiError or a library error (``DagnnError``) raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageInputError):
        return ApiError(422, "invalid_image", str(exc))
    if isinstance(exc, InputError):
        return ApiError(422, "invalid_input", str(exc))
    if isinstance(exc, MismatchError):
        return ApiError(409, "mismatch", str(exc))
    # anything else (an index file damaged under us, ...): this request cannot be served now
    return ApiError(503, "unavailable", str(exc))


async def handle_http(request: Request, exc: HTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else _HTTP_CODES.get(exc.status_code, "error")
    if exc.status_code == 404:
        message = f"no route {request.method} {shorten(request.url.path)}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {shorten(request.url.path)}"
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), message,
                          headers=getattr(exc, "headers", None))


async def handle_known(request: Request, exc: Exception) -> Response:
    api = as_api_error(exc)
    return error_response(api.status, api.code, api.message, api.headers)


def exception_handlers() -> dict:
    """Known errors are answered inside the app, without a traceback. Anything else is a bug: the app's
    outermost middleware logs it and answers 500."""
    return {HTTPException: handle_http, ApiError: handle_known, DagnnError: handle_known}
