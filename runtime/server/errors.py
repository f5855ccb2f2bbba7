"""The API's one error shape, ``{"error": {"code", "message"}}``, and how exceptions map onto it.

Problems with a request are 4xx with a code a client can branch on and a message a person can read.
A 500 means a bug: its traceback goes to the log, never into the response.
"""
from __future__ import annotations

import json
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import DagnnError, ImageInputError, InputError, MismatchError

try:
    import orjson
except ImportError:  # optional: the answers are the same without it, a little slower
    orjson = None

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_input",
               429: "too_many_requests", 503: "unavailable"}


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a stable ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def shorten(value, limit: int = 80) -> str:
    """At most ``limit`` characters of a client's input, for quoting it back in a message; a lone
    surrogate (not text: it cannot be written as UTF-8) is shown as its escape, e.g. ``\\ud800``."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_bytes(content) -> bytes:
    """``content`` as compact UTF-8 JSON, whatever strings and floats it holds: a lone surrogate (which UTF-8
    cannot encode) is written as its JSON escape and NaN or an infinity (not JSON) as null, instead of the
    answer failing with a 500."""
    if orjson is not None:  # the serve extra's fast encoder; NaN and infinities become null there too
        try:
            return orjson.dumps(content)
        except TypeError:  # a lone surrogate, or a type it does not know: the standard module's way below
            pass
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JSONAnswer(JSONResponse):
    """starlette's JSONResponse, rendered with ``json_bytes`` (never a 500 while writing the answer)."""

    def render(self, content) -> bytes:
        return json_bytes(content)


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = json_bytes({"error": {"code": code, "message": shorten(message, 2000)}})
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
