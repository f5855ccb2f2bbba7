"""What one request may ask of the service, and the middleware that enforces it before any work is done.

Uploads are counted while they stream in, so a client cannot make the server buffer a huge body before
it is refused; and requests beyond ``max_in_flight`` are answered 503 at once with ``Retry-After`` rather
than queued without bound (a client retrying later is better than every client timing out).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ApiError, error_response


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 1024 * 1024   # one request body (multipart upload or JSON)
    max_json_bytes: int = 1024 * 1024          # a JSON body (and a multipart text field)
    max_json_depth: int = 32                   # nesting of arrays and objects in a JSON body or field
    max_k: int = 1000                          # results per search
    max_text_chars: int = 1000                 # one text query or text item
    max_items: int = 64                        # items per POST /v1/items
    max_labels: int = 64                       # labels in one filter
    max_id_chars: int = 256                    # one item id
    max_metadata_bytes: int = 16 * 1024        # one item's metadata as JSON
    max_in_flight: int = 64                    # API requests being answered at once
    retry_after_s: int = 1                     # what a 503 tells the client to wait

    def __post_init__(self):
        bad = [k for k, v in asdict(self).items() if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"limits must be positive integers: {', '.join(bad)}")

    def as_dict(self) -> dict:
        return asdict(self)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        # Connection: close - the rest of the body is not read, and the server does not wait for it
        super().__init__(413, "too_large", f"request body is larger than the limit of {human_size(limit)}",
                         {"Connection": "close"})


def human_size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n} bytes"


class InFlight:
    """The number of API requests being answered (one event loop: a plain int is enough)."""
    n = 0


class LimitMiddleware:
    """Caps the body of every request at ``max_upload_bytes`` (by Content-Length, then while streaming)
    and the API requests in flight at ``max_in_flight``."""

    def __init__(self, app, limits: Limits, counter: "InFlight", on_reject=None, guarded_prefix: str = "/v1/"):
        self.app, self.limits, self.counter, self.prefix = app, limits, counter, guarded_prefix
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_upload_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            self.on_reject("too_large")
            return await error_response(413, "too_large", f"request body of {human_size(declared)} is larger "
                                        f"than the limit of {human_size(limit)}", {"Connection": "close"})(
                scope, receive, send)
        guarded = scope["path"].startswith(self.prefix)
        if guarded and self.counter.n >= self.limits.max_in_flight:
            self.on_reject("overloaded")
            headers = {"Retry-After": str(self.limits.retry_after_s)}
            return await error_response(503, "overloaded", f"the server is busy ({self.counter.n} requests in "
                                        "flight): retry later", headers)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.on_reject("too_large")
                    raise BodyTooLarge(limit)
            return message

        if guarded:
            self.counter.n += 1
        try:
            await self.app(scope, counted_receive, send)
        finally:
            if guarded:
                self.counter.n -= 1


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
