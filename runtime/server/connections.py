"""Connections a client cannot hold forever, and never more of them than the process has descriptors for.

uvicorn alone keeps a connection that sends its request head a byte at a time, or nothing at all, for as
long as the client likes, and accepts connections until ``accept`` fails for want of descriptors (then
asyncio logs a traceback for every try, many thousands a second). Here:

- ``guarded_protocol(base, ...)``: uvicorn's HTTP protocol class (``base``, passed in: only ``dagnn serve``
  imports uvicorn), on httptools or on h11 alike, with
  - a **head timeout**: a request head must be complete within ``header_timeout_s`` of the connection
    opening, or of the first byte of a later request on it; else 408 (or, when nothing at all came, the
    connection is just closed, as for an unused preconnect). What the parser refuses (not HTTP/1.1, or a head
    still incomplete past ``client_progress.MAX_HEAD_BYTES``) is 400 in the API's error shape, the same
    from either parser (uvicorn answers it in plain text, framed differently by each);
  - a **drain timeout**: when an answer went out before the request body was read (a refusal), the rest of
    the body must arrive within ``drain_timeout_s``; else the connection is closed;
  - a **send timeout**: a client that reads nothing of an answer for ``send_timeout_s`` is cut off;
  - a **connection cap** (``max_connections``, below the descriptor limit: ``descriptor_budget``): a new
    connection beyond it replaces the connection that has waited longest for a request (idle keep-alive,
    or a head still coming in); when every connection is busy answering, the new one gets 503 and is
    closed at once. So a flood of idle or slow connections never stops new clients (nor ``/healthz``)
    for long, and ``accept`` never runs out of descriptors.
  Keep-alive (between requests, after an answer) stays uvicorn's ``timeout_keep_alive``.
- ``BodyTimeout``: ASGI middleware giving a request whose body stops arriving for ``timeout_s`` a 408 with
  ``Connection: close`` (the route reading the body gets the error and answers it).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from .client_progress import MAX_HEAD_BYTES, client_progress
from .errors import ApiError

log = logging.getLogger("dagnn_runtime.server.connections")


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    header_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    send_timeout_s: float = 60.0

    def __post_init__(self):
        if self.max_connections < 1 or min(self.header_timeout_s, self.drain_timeout_s, self.send_timeout_s) <= 0:
            raise ValueError("connection limits must be positive")


def descriptor_budget(reserve: int, requested: int | None = None) -> tuple[int, int]:
    """``(max_connections, backlog)`` for this process: connections plus what one burst of ``accept`` can
    take at once (the listen backlog) plus ``reserve`` (index, model, log, upload and photo files) stay
    under the descriptor limit. The soft limit is first raised towards the hard one (at most 65536).
    ``requested`` (``--max-connections``) may be lower, not higher; ``ValueError`` says why."""
    try:
        import resource
    except ImportError:  # no descriptor limits to read (Windows): uvicorn's backlog, a fixed cap
        return requested or 1000, 2048
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    limit = 65536 if soft == resource.RLIM_INFINITY else soft
    backlog = max(16, min(2048, limit // 8))
    available = limit - reserve - backlog
    if available < 8:
        raise ValueError(f"the limit of {limit} open files leaves too few for connections: raise it "
                         f"(ulimit -n) to at least {reserve + backlog + 8}")
    if requested is not None and requested > available:
        raise ValueError(f"--max-connections {requested} is more than the limit of {limit} open files allows "
                         f"({available}, after {reserve} for the index, model and requests and {backlog} for "
                         "connections being accepted)")
    return requested or available, backlog


def _raw_answer(status: int, reason: str, code: str, message: str, headers: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{headers}connection: close\r\n\r\n").encode() + body


def guarded_protocol(base: type, limits: ConnectionLimits) -> type:
    """``base`` (uvicorn's ``HttpToolsProtocol`` or ``H11Protocol``) with the timeouts and the cap of the module
    docstring."""
    waiting: dict = {}  # connections not busy answering, oldest first (the order they last became idle)
    count = [0]         # connections open and not being closed (a closing one frees its descriptor soon)
    timed_out = _raw_answer(408, "Request Timeout", "timeout",
                            f"the request head did not arrive within {limits.header_timeout_s:g} s")
    full = _raw_answer(503, "Service Unavailable", "overloaded",
                       "the server has as many connections as it can hold: retry shortly", "retry-after: 1\r\n")
    malformed = _raw_answer(400, "Bad Request", "bad_request", "the request is not valid HTTP/1.1, or its head "
                            f"is longer than {MAX_HEAD_BYTES} bytes")

    class GuardedProtocol(client_progress(base), base):
        _timer = _timer_kind = _send_timer = None
        _counted = False

        # ---- connection -------------------------------------------------------------------------------
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            waiting[self] = None
            count[0] += 1
            self._counted = True
            self._arm("head", limits.header_timeout_s)
            if count[0] > limits.max_connections:
                victim = next((p for p in waiting if p is not self and not p._busy()
                               and not p.transport.is_closing()), None)
                if victim is not None:
                    victim._close("evicted: at the connection limit, the longest waiting connection goes")
                else:
                    self._close("refused: every connection is busy", full, logging.WARNING)

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None
            waiting.pop(self, None)
            self._uncount()
            super().connection_lost(exc)

        def _uncount(self) -> None:
            if self._counted:
                self._counted = False
                count[0] -= 1

        def _busy(self) -> bool:
            """Answering a request (the app runs, or its head arrived)."""
            return self.cycle is not None and not self.cycle.response_complete

        def _close(self, why: str, answer: bytes = b"", level: int = logging.INFO) -> None:
            if self.transport.is_closing():
                return
            log.log(level, "closing a connection from %s: " + why.replace("%", "%%"), _peer(self.client))
            waiting.pop(self, None)
            self._uncount()
            if answer:
                self.transport.write(answer)
            self.transport.close()

        # ---- the request head, and the rest of a body no one reads ---------------------------------
        def data_received(self, data: bytes) -> None:
            if self._timer is None and not self._busy() and self._head_pending():
                self._arm("head", limits.header_timeout_s)  # a later request on a kept-alive connection
            super().data_received(data)
            # the head is complete (busy: a pipelined head behind it is timed once this one is answered)
            if self._timer_kind == "head" and (self._busy() or not self._head_pending()):
                self._disarm()
                waiting.pop(self, None)
            elif self._timer_kind == "drain" and not self._body_pending():  # the unread body is through
                self._disarm()
                if self._head_pending() and not self._busy():
                    self._arm("head", limits.header_timeout_s)

        def send_400_response(self, msg: str) -> None:
            """What the parser refused: the same answer from either parser."""
            self._close("the HTTP parser refused the request", malformed, logging.DEBUG)  # already logged

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing() or self._busy():
                return
            waiting.pop(self, None)
            waiting[self] = None
            if self._body_pending():  # answered before the body was read: drain, bounded
                self._arm("drain", limits.drain_timeout_s)
            elif self._head_begun():  # part of a next request came along (pipelined): its head is timed now
                self._arm("head", limits.header_timeout_s)

        def _arm(self, kind: str, seconds: float) -> None:
            self._disarm()
            self._timer_kind = kind
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._timer_kind = None

        def _expired(self) -> None:
            kind, self._timer, self._timer_kind = self._timer_kind, None, None
            if kind == "head" and not self._head_begun():
                self._close("no request within the head timeout", level=logging.DEBUG)  # e.g. a preconnect
            elif kind == "head":
                self._close(f"request head not complete within {limits.header_timeout_s:g} s", timed_out)
            else:
                self._close(f"request body not through within {limits.drain_timeout_s:g} s of the answer")

        # ---- a client that does not read the answer ------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(limits.send_timeout_s, self._send_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _send_stalled(self) -> None:
            self._send_timer = None
            if not self.transport.is_closing():
                log.warning("closing a connection from %s: it read nothing of the answer for %g s",
                            _peer(self.client), limits.send_timeout_s)
                self._uncount()
                self.transport.abort()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def _peer(client) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


class BodyTimedOut(ApiError):
    def __init__(self, seconds: float):
        super().__init__(408, "timeout", f"no request body data arrived for {seconds:g} s", {"Connection": "close"})


class BodyTimeout:
    """ASGI middleware: while a request's body is being read, each part must come within ``timeout_s``."""

    def __init__(self, app, timeout_s: float = 10.0):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        done = False

        async def timed_receive():
            nonlocal done
            if done:  # the body is in: what remains is waiting for a disconnect, for as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                raise BodyTimedOut(self.timeout_s) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return await self.app(scope, timed_receive, send)
