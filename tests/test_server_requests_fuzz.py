"""A bounded hypothesis fuzz of the request reader against a real ``dagnn serve``: arbitrary JSON values and
raw bytes as bodies, random multipart forms. Whatever is sent, the answer is never a 500, and every error
is the API's shape ``{"error": {"code", "message"}}`` (issue 24).

Bounded: a few hundred examples in all, each request a few milliseconds; derandomized so that a run is
reproducible (the examples still cover surrogates, NaN, deep and odd values and invalid UTF-8).
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bundle_factory import LABELS, bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from serve_helpers import served_factory_index  # noqa: E402
from test_server_requests import multipart  # noqa: E402

FUZZ = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
EXPECTED = {200, 201, 400, 404, 409, 413, 415, 422}


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle_dir, model, data_dir):
    with served_factory_index(tmp_path_factory, bundle_dir, model, data_dir, "reader-fuzz") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def check(res) -> None:
    """Never a 500; an error is ``{"error": {"code": str, "message": str}}`` and nothing else."""
    assert res.status_code in EXPECTED, (res.status_code, res.text)
    body = res.json()  # every answer, success or not, is JSON that parses
    if res.status_code >= 400:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert all(isinstance(body["error"][k], str) for k in ("code", "message")), body


# ---- strategies -----------------------------------------------------------------------------------------
# Mostly well-formed requests with hostile values in them (a body rejected at its first byte tests little):
# lone surrogates, controls, non-ASCII digits, NaN, huge numbers, wrong types, deep-ish nesting.
plausible_text = st.sampled_from(["sky", "sky, sea", "night, city, lights", "sea \U0001F600", "dog, cat", *LABELS])
hostile_text = st.one_of(
    st.sampled_from(["clouds, \ud800", "\udfff sky", "\x00", "\u0665", "\uff15", " ", "", "a" * 1001, "sky\u202e",
                     "\ufeffsea", "sky\r\nsea"]),
    st.text(max_size=20),
    # st.text never draws surrogates: a list of characters, some of them lone surrogates, does
    st.lists(st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                                      categories=["Cs"])), max_size=12).map("".join),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), hostile_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)), max_leaves=12)

texts = st.one_of(plausible_text, hostile_text, json_values)
ids = st.one_of(st.text(alphabet="abcxyz0189-_/.", min_size=1, max_size=8), hostile_text, json_values)
ks = st.one_of(st.integers(1, 20), st.sampled_from([0, -1, 1001, 2 ** 64, "5", "\u0665", True, 5.0, None]),
               json_values)
label_lists = st.one_of(st.lists(st.sampled_from([*LABELS, "nope", "\ud800", ""]), max_size=3), json_values)
metadata_values = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(["note", "labels", "src", "path", "\ud800"]), hostile_text),
                    json_values, max_size=3), json_values)

search_bodies = st.fixed_dictionaries({"text": texts}, optional={
    "k": ks, "target": st.one_of(st.sampled_from(["image", "text", ""]), json_values), "labels": label_lists})
item_objects = st.fixed_dictionaries({"id": ids, "text": texts},
                                     optional={"metadata": metadata_values})
items_bodies = st.fixed_dictionaries({"items": st.one_of(st.lists(item_objects, min_size=1, max_size=3),
                                                         json_values)})
other_bodies = st.one_of(json_values, st.dictionaries(hostile_text, json_values, max_size=4))


def to_json(value) -> bytes:
    """JSON as a client could send it: ASCII with escapes (so lone surrogates travel), NaN as NaN."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


raw_bytes = st.one_of(
    st.builds(lambda v, cut: to_json(v)[:cut], st.one_of(search_bodies, items_bodies), st.integers(0, 300)),
    st.builds(lambda v, junk: to_json(v).replace(b"sky", junk), search_bodies,
              st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xf4\x90\x80\x80", b"\x00"])),
    st.binary(max_size=200))


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 80, 40)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


# ---- JSON bodies ----------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def _json_bodies(client, data):
    path = data.draw(st.sampled_from(["/v1/search", "/v1/items"]), "path")
    body = data.draw(st.one_of(search_bodies if path == "/v1/search" else items_bodies, other_bodies), "body")
    check(client.post(path, content=to_json(body), headers={"content-type": "application/json"}))


def test_any_json_value_as_a_body_is_answered_without_a_500(client):
    _json_bodies(client)


@FUZZ
@given(path=st.sampled_from(["/v1/search", "/v1/items"]), body=raw_bytes,
       media=st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain"]))
def _raw_bodies(client, path, body, media):
    check(client.post(path, content=body, headers={"content-type": media}))


def test_any_bytes_as_a_body_are_answered_without_a_500(client):
    _raw_bodies(client)


# ---- multipart forms ------------------------------------------------------------------------------------
def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate as the bytes naive code would write


field_values = {
    "image": st.sampled_from([PNG, b"junk", b"", PNG[:40]]),
    "id": st.one_of(ids.filter(lambda v: isinstance(v, str)).map(_encoded),
                    st.sampled_from([b"bad\xff", b"\xed\xa0\x80", b"caf\xe9"])),
    "metadata": st.one_of(metadata_values.map(to_json), st.sampled_from([b'{"a": 1, "a": 2}', b"[" * 50])),
    "k": st.one_of(st.integers(-3, 1003).map(lambda n: str(n).encode()),
                   st.sampled_from(["\u0665", "\uff15", " 5", "+5", "5.0", "", "1" * 30]).map(str.encode)),
    "labels": st.one_of(st.lists(st.sampled_from([*LABELS, *LABELS, "nope", "\ud800"]), max_size=3).map(
        lambda ls: _encoded(",".join(ls))), st.binary(max_size=12)),
    "target": st.sampled_from([b"image", b"text", b"", b"video", b"\xff"]),
}
field_values["top"] = field_values["k"]
any_field = st.one_of(
    st.sampled_from(sorted(field_values)).flatmap(lambda name: st.tuples(
        st.just(name), field_values[name], st.sampled_from([None, "a.png"] if name == "image" else [None]))),
    st.tuples(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters='"\\'),
                      max_size=8), st.binary(max_size=40), st.sampled_from([None, "x.bin"])))
forms = st.tuples(field_values["image"].map(lambda data: ("image", data, "a.png")), field_values["id"],
                  st.lists(any_field, max_size=4)).map(lambda t: [t[0], ("id", t[1], None), *t[2]])
forms = st.one_of(forms, forms.map(lambda fs: [fs[0], *fs[2:]]), st.lists(any_field, max_size=5))


@FUZZ
@given(path=st.sampled_from(["/v1/search", "/v1/items", "/v1/tag"]), fields=forms,
       charset=st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-7", "; charset=bogus"]))
def _forms(client, path, fields, charset):
    body, headers = multipart(fields)
    headers["content-type"] += charset
    check(client.post(path, content=body, headers=headers))


def test_any_multipart_form_is_answered_without_a_500(client):
    _forms(client)


def test_the_fuzzed_server_logged_no_traceback(server, client):
    assert client.get("/readyz").status_code == 200
    assert "Traceback" not in server.log() and "bug while answering" not in server.log(), server.log()
