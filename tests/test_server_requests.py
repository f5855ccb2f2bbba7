"""The request reader against a real ``dagnn serve``: every JSON body and multipart field is read within its
limits and checked as text, and no input string can cause a 500 (issue 24).

One test per class of hostile request: deep nesting, lone surrogates anywhere, invalid UTF-8, a JSON body
over its limit (refused before it is all sent), duplicate keys, ``k`` that is not an integer, non-JSON
numbers; and answers and error messages that cannot fail to render.
"""
from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import served_factory_index  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle_dir, model, data_dir):
    with served_factory_index(tmp_path_factory, bundle_dir, model, data_dir, "requests") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def limits(client):
    return client.get("/v1/info").json()["limits"]


def error_of(res, status: int, code: str | None = None) -> str:
    """The message of an API error answer, after checking its status, code and shape."""
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str), body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def post_json(client, path: str, body: str | bytes):
    """POST ``body`` exactly as given (escapes such as ``\\ud800`` and duplicate keys survive)."""
    content = body.encode() if isinstance(body, str) else body
    return client.post(path, content=content, headers={"content-type": "application/json"})


def multipart(parts, boundary: str = "dagnn-test-boundary") -> tuple[bytes, dict]:
    """A multipart/form-data body from ``(name, value bytes, filename or None)``, byte for byte as given."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={boundary}"}


def post_form(client, path: str, parts):
    body, headers = multipart(parts)
    return client.post(path, content=body, headers=headers)


IMAGE = ("image", b"not decoded before the fields are checked", "a.jpg")


# ---- nesting --------------------------------------------------------------------------------------------
DEEP = 100_000


@pytest.mark.parametrize("path, body", [
    ("/v1/search", '{"text": "sky", "labels": ' + "[" * DEEP + "]" * DEEP + "}"),
    ("/v1/search", "[" * DEEP),  # not even closed: refused before parsing
    ("/v1/items", '{"items": [{"id": "deep", "text": "sky", "metadata": {"a": ' + '{"b": ' * DEEP + "1"
     + "}" * DEEP + "}}]}"),
    ("/v1/search", '{"text": "sky", "labels": ' + "[" * 40 + "]" * 40 + "}"),  # over the limit of 32
], ids=["search-labels", "unclosed", "items-metadata", "just-over-the-limit"])
def test_deeply_nested_json_is_400(client, path, body):
    assert "levels deep" in error_of(post_json(client, path, body), 400, "invalid_json")


def test_deeply_nested_metadata_in_a_form_is_400(client):
    deep = ("[" * DEEP + "]" * DEEP).encode()
    res = post_form(client, "/v1/items", [IMAGE, ("id", b"deep-form", None), ("metadata", b'{"a": ' + deep + b"}", None)])
    assert "levels deep" in error_of(res, 400, "invalid_json")


def test_unterminated_strings_are_scanned_in_linear_time(client):
    """The depth scan must not backtrack: ``"\\"\\"…`` never closes (a string-literal regex over it is
    quadratic: minutes for a few hundred KB)."""
    from dagnn_runtime.jsonio import nesting_depth

    hostile = "[" * 40 + '"' + '\\"' * 300_000
    started = time.monotonic()
    assert nesting_depth(hostile) == 40
    assert time.monotonic() - started < 2
    started = time.monotonic()
    error_of(post_json(client, "/v1/search", hostile), 400, "invalid_json")
    assert time.monotonic() - started < 5


# ---- lone surrogates ------------------------------------------------------------------------------------
SURROGATE_BODIES = {
    "search-text": ("/v1/search", r'{"text": "sky, \ud800"}'),
    "search-label": ("/v1/search", r'{"text": "sky", "labels": ["sky", "\udc00"]}'),
    "search-target": ("/v1/search", r'{"text": "sky", "target": "\udfff"}'),
    "search-unknown-key": ("/v1/search", r'{"text": "sky", "\ud800": 1}'),
    "search-k": ("/v1/search", r'{"text": "sky", "k": "\ud800"}'),
    "item-id": ("/v1/items", r'{"items": [{"id": "sur\ud800", "text": "sky"}]}'),
    "item-text": ("/v1/items", r'{"items": [{"id": "sur-1", "text": "sky \udbff"}]}'),
    "metadata-value": ("/v1/items", r'{"items": [{"id": "sur-2", "text": "sky", "metadata": {"note": "\ud800"}}]}'),
    "metadata-key": ("/v1/items", r'{"items": [{"id": "sur-3", "text": "sky", "metadata": {"\ud800": 1}}]}'),
    "metadata-labels": ("/v1/items", r'{"items": [{"id": "sur-4", "text": "sky", "metadata": {"labels": ["\ud800"]}}]}'),
    "metadata-deep": ("/v1/items", r'{"items": [{"id": "sur-5", "text": "sky", "metadata": {"a": [1, {"b": "x\udc80"}]}}]}'),
    "reversed-pair": ("/v1/search", r'{"text": "sky \ude00\ud83d"}'),
}


@pytest.mark.parametrize("path, body", SURROGATE_BODIES.values(), ids=SURROGATE_BODIES.keys())
def test_a_lone_surrogate_anywhere_in_a_json_body_is_400(client, path, body):
    message = error_of(post_json(client, path, body), 400, "invalid_unicode")
    assert "lone surrogate" in message


def test_a_lone_surrogate_in_form_metadata_is_400(client):
    res = post_form(client, "/v1/items", [IMAGE, ("id", b"sur-form", None), ("metadata", rb'{"n": "\ud800"}', None)])
    assert "metadata" in error_of(res, 400, "invalid_unicode")


def test_valid_surrogate_pairs_are_text(client):
    res = post_json(client, "/v1/search", r'{"text": "sky, \ud83d\ude00", "k": 2}')
    assert res.status_code == 200, res.text
    assert res.json()["ignored_tags"] == ["\U0001F600"]


# ---- invalid UTF-8 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    b'{"text": "sky \xff"}',
    b'{"text": "sky \xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes (CESU-style): not UTF-8
    b'{"text": "sky", "labels": ["\xc3"]}',  # a cut multi-byte sequence
], ids=["0xff", "encoded-surrogate", "truncated-sequence"])
def test_invalid_utf8_in_a_json_body_is_400(client, body):
    assert "not UTF-8" in error_of(post_json(client, "/v1/search", body), 400, "invalid_unicode")


@pytest.mark.parametrize("path, parts", [
    ("/v1/items", [IMAGE, ("id", b"bad-\xff\xfe", None)]),
    ("/v1/items", [IMAGE, ("id", b"bad-\xed\xa0\x80", None)]),
    ("/v1/items", [IMAGE, ("id", b"bad-meta", None), ("metadata", b'{"note": "\xe9t\xe9"}', None)]),
    ("/v1/search", [IMAGE, ("labels", b"sky,\xff", None)]),
    ("/v1/search", [IMAGE, ("k", b"\xd9", None)]),
    ("/v1/tag", [IMAGE, ("top", b"\x85", None)]),
], ids=["id", "id-encoded-surrogate", "metadata-latin1", "labels", "k", "top"])
def test_invalid_utf8_in_a_form_text_field_is_400(client, path, parts):
    assert "not utf-8 text" in error_of(post_form(client, path, parts), 400, "invalid_unicode")


# ---- size: refused while the body streams in, never buffered up to the upload cap -----------------------
def _connect(server) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def _host(server) -> str:
    return urlsplit(server.url).netloc


def _answer(sock: socket.socket, wait: float):
    """(status, headers, body) of the HTTP answer on ``sock``, or None if none began within ``wait`` s."""
    sock.settimeout(wait)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None if not data else _parse(data, sock)
            data += chunk
    except (socket.timeout, ConnectionResetError):
        return None
    return _parse(data, sock)


def _parse(data: bytes, sock: socket.socket):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    sock.settimeout(10)
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("path", ["/v1/search", "/v1/items"])
def test_a_json_body_declared_over_the_limit_is_413_before_it_is_sent(server, limits, path):
    """Content-Length of 5 MB (over the 1 MB JSON limit, under the 20 MB upload cap): the answer comes at
    once, with only the first bytes of the body sent, and the server closes the connection."""
    declared = 5 * 1024 * 1024
    assert limits["max_json_bytes"] < declared < limits["max_upload_bytes"]
    with _connect(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {_host(server)}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode() + b'{"text": "')
        started = time.monotonic()
        answer = _answer(sock, wait=5)
        assert answer is not None, "no answer while the body was still to come: the server waits for it"
        status, headers, body = answer
        assert status == 413 and body["error"]["code"] == "too_large", body
        assert "5 MB" in body["error"]["message"] and headers.get("connection") == "close"
        assert time.monotonic() - started < 5 and _closed(sock)


def test_a_json_body_streaming_over_the_limit_is_413_once_the_limit_is_passed(server, limits):
    """No Content-Length (chunked): nothing is answered while the body is within the limit, and 413 comes
    as soon as the limit is passed, not when the body ends (it never does here)."""
    limit, piece = limits["max_json_bytes"], 64 * 1024

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    with _connect(server) as sock:
        sock.sendall(f"POST /v1/items HTTP/1.1\r\nHost: {_host(server)}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        start = b'{"items": [{"id": "big", "text": "'
        sock.sendall(chunk(start))
        sent = len(start)
        while sent < limit:
            data = b"a" * min(piece, limit - sent)
            sock.sendall(chunk(data))
            sent += len(data)
        assert sent == limit
        assert _answer(sock, wait=0.5) is None, "answered before the limit was reached"
        sock.sendall(chunk(b"a" * piece))
        answer = _answer(sock, wait=5)
        assert answer is not None, "no answer after the limit was passed: the server goes on reading"
        status, headers, body = answer
        assert status == 413 and body["error"]["code"] == "too_large", body
        assert headers.get("connection") == "close" and _closed(sock)


def test_a_form_text_field_over_the_limit_is_400(client, limits):
    res = post_form(client, "/v1/items", [IMAGE, ("id", b"x" * (limits["max_json_bytes"] + 1), None)])
    error_of(res, 400, "invalid_multipart")


# ---- duplicate keys -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, body", [
    ("/v1/search", '{"text": "sky", "text": "sea"}'),
    ("/v1/search", '{"text": "sky", "k": 1, "k": 2}'),
    ("/v1/items", '{"items": [{"id": "dup-1", "id": "dup-2", "text": "sky"}]}'),
    ("/v1/items", '{"items": [{"id": "dup-3", "text": "sky", "metadata": {"a": 1, "a": 2}}]}'),
], ids=["text", "k", "item-id", "metadata"])
def test_duplicate_keys_are_400(client, path, body):
    assert "duplicate key" in error_of(post_json(client, path, body), 400, "invalid_json")


def test_duplicate_keys_in_form_metadata_are_400(client):
    res = post_form(client, "/v1/items", [IMAGE, ("id", b"dup-form", None), ("metadata", b'{"a": 1, "a": 2}', None)])
    assert "duplicate key" in error_of(res, 400, "invalid_json")


# ---- strict types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ['"5"', '"\u0665"', "true", "5.0", '"5 "', "[5]", "1e2"],
                         ids=["string", "arabic-indic-digit", "bool", "float", "padded", "list", "exponent"])
def test_k_in_json_must_be_a_json_integer(client, k):
    body = '{"text": "sky", "k": ' + k + "}"
    assert error_of(post_json(client, "/v1/search", body.encode()), 400, "invalid_field").startswith("k:")


@pytest.mark.parametrize("k", ["\u0665", "\uff15", " 5", "5 ", "+5", "5.0", "5_0", "0x5", "", "99999999999999999999"],
                         ids=["arabic-indic", "fullwidth", "leading-space", "trailing-space", "plus", "decimal",
                              "underscore", "hex", "empty", "huge"])
def test_k_and_top_in_forms_are_ascii_digits(client, k):
    value = k.encode()
    assert error_of(post_form(client, "/v1/search", [IMAGE, ("k", value, None)]), 400).startswith("k:")
    if k:  # an empty top means "no top"
        assert error_of(post_form(client, "/v1/tag", [IMAGE, ("top", value, None)]), 400).startswith("top:")


def test_k_as_digits_in_a_form_and_an_integer_in_json_are_accepted(client, data_dir):
    photo = (data_dir / "images" / "im0.jpg").read_bytes()
    res = post_form(client, "/v1/search", [("image", photo, "q.jpg"), ("k", b"3", None), ("target", b"image", None)])
    assert res.status_code == 200 and len(res.json()["results"]) == 3, res.text
    res = post_form(client, "/v1/tag", [("image", photo, "q.jpg"), ("top", b"2", None)])
    assert res.status_code == 200 and len(res.json()["labels"]) <= 2, res.text
    assert post_json(client, "/v1/search", '{"text": "sky", "k": 4}').json()["results"].__len__() == 4


@pytest.mark.parametrize("path, body, field", [
    ("/v1/search", '{"text": "sky", "labels": [1]}', "labels"),
    ("/v1/search", '{"text": "sky", "labels": {"sky": true}}', "labels"),
    ("/v1/search", '{"text": ["sky"]}', "text"),
    ("/v1/search", '{"text": "sky", "target": ["image"]}', "target"),
    ("/v1/items", '{"items": [{"id": 7, "text": "sky"}]}', "items[0].id"),
    ("/v1/items", '{"items": [{"id": "t7", "text": {"sky": 1}}]}', "items[0].text"),
    ("/v1/items", '{"items": [{"id": "t8", "text": "sky", "metadata": {"x": NaN}}]}', "items[0].metadata"),
    ("/v1/items", '{"items": [{"id": "t9", "text": "sky", "metadata": {"x": 1e999}}]}', "items[0].metadata"),
    ("/v1/search", '{"text": "sky", "k": Infinity}', "k"),
], ids=["label-int", "labels-object", "text-list", "target-list", "id-int", "text-object", "nan", "overflow",
        "infinity"])
def test_fields_of_the_wrong_type_are_400_naming_the_field(client, path, body, field):
    assert error_of(post_json(client, path, body), 400, "invalid_field").startswith(field)


# ---- rendering: answers and error messages never fail -----------------------------------------------------
def test_answers_and_error_messages_render_whatever_they_hold():
    from dagnn_runtime.server.errors import error_response, json_bytes, shorten

    assert json.loads(json_bytes({"id": "a\ud800", "x": float("nan"), "é": "é"})) == \
        {"id": "a\ud800", "x": None, "é": "é"}
    assert shorten("bad \udcff" + "x" * 200).startswith("bad \\udcff") and len(shorten("y" * 200)) == 80
    body = json.loads(error_response(400, "invalid_field", "text: got 'sky \ud800'").body)
    assert body == {"error": {"code": "invalid_field", "message": "text: got 'sky \\ud800'"}}


# ---- last: nothing above left a traceback in the server's log ---------------------------------------------
def test_the_server_log_holds_no_traceback(server, client):
    assert client.get("/readyz").status_code == 200
    log = server.log()
    assert "Traceback" not in log and "bug while answering" not in log, log
