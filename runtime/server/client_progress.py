"""Where the client is in its request, whichever HTTP/1.1 parser uvicorn runs: ``connections.guarded_protocol``
times a request head and an unread body from it. h11 keeps that state (``their_state``); httptools keeps
none to ask, so its parser callbacks are followed; there what h11 refuses and llhttp lets through is
refused too (a head or trailers past ``MAX_HEAD_BYTES``, no Host or two), as a 400 like h11's."""
from __future__ import annotations

MAX_HEAD_BYTES = 16 * 1024  # an incomplete request head (or trailer section) may not grow past this: h11's bound


def client_progress(base: type) -> type:
    """A mixin for uvicorn's protocol ``base`` answering the guards' questions about the client's side of the
    connection: ``_head_pending()``, is a request head awaited (nothing, or part of one, came)?
    ``_head_begun()``, did part of it come? ``_body_pending()``, is a request body still coming in?"""
    if hasattr(base, "on_headers_complete"):  # httptools: its parser calls back
        return CallbackProgress
    import h11  # here only when dagnn serve runs uvicorn

    class H11Progress:
        def _head_pending(self) -> bool:
            return self.conn.their_state is h11.IDLE

        def _head_begun(self) -> bool:
            return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

        def _body_pending(self) -> bool:
            return self.conn.their_state is h11.SEND_BODY

    return H11Progress


class CallbackProgress:
    """``_phase`` from httptools' callbacks: idle (nothing of a request yet), head (part of a head), body (head
    complete, body coming), done (request complete, its answer not yet). Pipelined requests are parsed as
    they come, not after the answer before them: "done" turns idle only once the newest request's answer
    is complete, where h11 comes back to IDLE. An exception in a callback is uvicorn's 400."""
    _phase = "idle"
    _heads = _head_size = _hosts = _trailer_bytes = 0  # requests begun; of the newest: its head's size, ...

    def data_received(self, data: bytes) -> None:
        """llhttp bounds no head: reads that fall wholly inside one head are counted (so a head is refused
        at most one read past ``MAX_HEAD_BYTES``; a pipelined one too, which h11 would not read yet)."""
        heads = self._heads
        super().data_received(data)
        if self._phase == "head" and self._heads == heads and not self.transport.is_closing():
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_BYTES:
                self.logger.warning("Request head over %d bytes.", MAX_HEAD_BYTES)
                self.send_400_response("Request head too long.")

    def on_message_begin(self) -> None:
        self._phase, self._head_size, self._hosts, self._trailer_bytes = "head", 0, 0, 0
        self._heads += 1
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase == "body":  # a trailer, after a chunked body: dropped as h11 drops it (uvicorn would add
            self._trailer_bytes += len(name) + len(value)  # it to the request's headers), and bounded
            if self._trailer_bytes > MAX_HEAD_BYTES:
                raise ValueError(f"trailers over {MAX_HEAD_BYTES} bytes")
            return
        self._hosts += name.lower() == b"host"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._phase = "body"
        if self._hosts > 1 or (self._hosts == 0 and self.parser.get_http_version() == "1.1"):
            raise ValueError("an HTTP/1.1 request has one Host header")  # as h11 (RFC 9112, 3.2)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = "idle" if self._answered() else "done"  # answered already: the unread body is through
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase == "done" and self._answered():
            self._phase = "idle"
        super().on_response_complete()

    def _answered(self) -> bool:
        return self.cycle is not None and self.cycle.response_complete

    def _head_pending(self) -> bool:
        return self._phase in ("idle", "head")

    def _head_begun(self) -> bool:
        return self._phase == "head"

    def _body_pending(self) -> bool:
        return self._phase == "body"
