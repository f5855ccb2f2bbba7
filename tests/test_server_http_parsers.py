"""What reaches the HTTP parser, on both of uvicorn's: httptools (what ``dagnn serve`` picks) and h11 (its
fallback), each under a real ``dagnn serve`` on 127.0.0.1. Requests the parser refuses, heads past 16 KiB
(h11's bound, which llhttp lacks), pipelined requests, trailers, and a kept-alive connection's next head
get the same answers from both. The slow-client guards themselves: tests/test_server_connections.py."""
from __future__ import annotations

import json
import socket
import time
from importlib.util import find_spec

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import PARSERS, build_index, serve  # noqa: E402

HOST = b"Host: 127.0.0.1\r\n"
HEALTHZ = b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, data_dir):
    return build_index(model, data_dir, tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="module", params=PARSERS)
def server(request, tmp_path_factory, bundle_dir, index_dir):
    with serve(bundle_dir, index_dir, tmp_path_factory.mktemp("logs"), "--header-timeout-s", "1",
               "--body-timeout-s", "1", parser=request.param) as srv:
        yield srv
    assert "Traceback" not in srv.log(), srv.log()


def exchange(server, *parts, wait: float = 2.0):
    """Sends ``parts`` (bytes; a float: a pause), then reads until the server closes or is silent for
    ``wait`` s: ``(answers, closed)``, each answer ``(status, body)`` with a JSON body decoded."""
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)
    with sock:
        for part in parts:
            if isinstance(part, float):
                time.sleep(part)
                continue
            try:
                sock.sendall(part)
            except OSError:  # refused and closed while still sending
                break
        return read_answers(sock, wait)


def read_answers(sock: socket.socket, wait: float):
    data, closed = b"", False
    sock.settimeout(wait)
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except socket.timeout:
        pass
    except OSError:
        closed = True
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", len(rest)))
        body, data = rest[:n], rest[n:]
        answers.append((int(lines[0].split()[1]),
                        json.loads(body) if "json" in headers.get("content-type", "") else body))
    return answers, closed


def refused(answers, closed) -> bool:
    """The parser's refusal: a 400 in the API's error shape, and the connection closed."""
    status, body = answers[-1]
    return closed and status == 400 and body["error"]["code"] == "bad_request"


@pytest.mark.parametrize("raw", [
    b"HELLO\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
    "GET /healthz/é HTTP/1.1\r\n".encode() + HOST + b"\r\n",
    b"POST /v1/search HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /v1/search HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
], ids=["not-http", "space-in-name", "nul-in-value", "non-ascii-path", "two-lengths", "bad-chunk", "no-host",
        "two-hosts"])
def test_what_the_parser_refuses_is_400_in_the_api_shape(server, raw):
    answers, closed = exchange(server, raw)
    assert len(answers) == 1 and refused(answers, closed), (answers, closed)


def test_a_head_growing_past_16_kib_is_refused_and_a_smaller_one_answered(server):
    start = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Pad: "
    answers, closed = exchange(server, start, *[b"a" * 1000, 0.01] * 12, b"\r\n\r\n")  # 12 KB: answered
    assert [a[0] for a in answers] == [200] and not closed, answers
    answers, closed = exchange(server, start, *[b"a" * 1000, 0.01] * 40, b"\r\n\r\n")  # 40 KB: refused
    assert len(answers) == 1 and refused(answers, closed), (answers, closed)


def test_pipelined_requests_are_answered_in_order(server):
    info = b"GET /v1/info HTTP/1.1\r\n" + HOST + b"\r\n"
    answers, closed = exchange(server, HEALTHZ + info + HEALTHZ)
    assert [a[0] for a in answers] == [200, 200, 200] and not closed, answers
    assert "model" in json.dumps(answers[1][1]) and answers[0][1] == answers[2][1], answers


def test_a_head_flooding_in_behind_a_pipelined_request_is_refused(server):
    """httptools parses a pipelined head while the request before it is answered (h11 waits): its bound
    holds there too."""
    answers, closed = exchange(server, HEALTHZ + b"GET /healthz HTTP/1.1\r\nX-Pad: ", *[b"a" * 1000, 0.005] * 200)
    assert refused(answers, closed) and [a[0] for a in answers[:-1]] in ([], [200]), answers


def test_trailers_are_dropped_and_a_flood_of_them_refused(server):
    """A trailer changes nothing of the request (httptools' uvicorn would add it to the headers); 40 KB of
    them are refused like a head that long."""
    head = (b"POST /v1/search HTTP/1.1\r\n" + HOST
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b'{"text": "sky", "k": 2}'
    chunked = head + b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    answers, closed = exchange(server, chunked + b"Content-Type: text/plain\r\n\r\n" + HEALTHZ)
    assert [a[0] for a in answers] == [200, 200] and len(answers[0][1]["results"]) == 2, answers
    answers, closed = exchange(server, chunked, *[b"X-T: " + b"a" * 1000 + b"\r\n", 0.005] * 40, b"\r\n")
    assert refused(answers, closed), (answers, closed)


def test_a_kept_alive_connection_waits_for_a_request_then_times_its_head(server):
    """After an answer the connection waits (keep-alive) for a next request; once that begins, its head has
    the 1 s head timeout: 408."""
    answers, closed = exchange(server, HEALTHZ, 1.5, HEALTHZ, b"GET /hea", wait=3)
    assert [a[0] for a in answers] == [200, 200, 408] and closed, answers
    assert answers[2][1]["error"]["code"] == "timeout", answers


def test_a_request_after_a_drained_body_is_answered(server):
    """A 415 answered before its body was read; the rest of the body comes, then the next request."""
    refusal = b"POST /v1/search HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nab"
    answers, closed = exchange(server, refusal, 0.3, b"cdefghij", 0.3, HEALTHZ)
    assert [a[0] for a in answers] == [415, 200] and not closed, answers


def test_without_httptools_and_uvloop_serve_falls_back_to_h11_and_asyncio(monkeypatch):
    import sys

    from dagnn_cli.serve_cmd import event_loop, http_protocol

    monkeypatch.delenv("DAGNN_HTTP_PARSER", raising=False)
    if find_spec("httptools") is not None:
        assert http_protocol()[1] == "httptools"
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)  # import fails
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert http_protocol()[1] == "h11" and event_loop() == "asyncio"
