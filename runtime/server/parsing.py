"""The one request reader: every JSON body and every multipart field goes through here, within limits.

- Size: a JSON body is counted while it streams in and refused (413, connection closed) once over
  ``max_json_bytes``, or at once when its Content-Length says so: never buffered up to the upload cap.
  Multipart text fields are capped at the same size.
- Syntax: ``jsonio.loads`` (depth bounded without recursion, duplicate keys refused); no NaN or Infinity.
- Text: JSON bodies and multipart text fields must be UTF-8 (or the form's charset); no string anywhere
  (values and keys, however deep) may hold a lone surrogate such as JSON ``"\\ud800"``: it is not text.
- Types: ``k`` and ``top`` are JSON integers (not bools, floats or strings) in JSON and ASCII digits in
  forms; labels are a list of strings; ids and texts are strings.

Every refusal names the field and quotes at most 80 characters of what was sent. Malformed requests are
400; well-formed ones the model cannot use (unknown label, no known tag, undecodable image) are 422.
"""
from __future__ import annotations

import json
import math
import re
from contextlib import aclosing

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .. import jsonio
from ..errors import InputError
from ..indexes.inputs import item_key
from .errors import ApiError, shorten
from .limits import Limits, human_size

MULTIPART = "multipart/form-data"
JSON = "application/json"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def bad(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {problem}")


# ---- text: every string a request hands us ------------------------------------------------------------
def _lone_surrogate(value: str) -> int | None:
    """The index of the first lone surrogate in ``value`` (not text: UTF-8 cannot encode it), else None."""
    try:
        value.isascii() or value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _undecodable(field: str, data: bytes, exc: UnicodeDecodeError, charset: str = "UTF-8") -> ApiError:
    return ApiError(400, "invalid_unicode", f"{field}: not {charset} text (byte {exc.start} is "
                    f"{data[exc.start:exc.start + 1]!r})")


def _not_text(where: str, value: str, at: int) -> ApiError:
    return ApiError(400, "invalid_unicode", f"{where}: holds a lone surrogate (U+{ord(value[at]):04X}) at character "
                    f"{at}, which is not text: send UTF-8 text (in JSON, \\ud800-\\udfff only as valid pairs)")


def _path(field: str, parts: tuple) -> str:
    """Where a value sits, e.g. ``items[0].metadata.note``; a body's own fields are named bare."""
    out = "" if field == BODY else field
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + shorten(part, 40))
    return out or field


BODY = "the body"


def check_strings(value, field: str) -> None:
    """Refuse (400) a lone surrogate in any string of ``value`` (values and keys, however deep) and the
    non-JSON floats NaN and ±Infinity (Python's parser accepts them; no answer could carry them). Iterative:
    the depth is bounded by the parser, but no recursion is needed."""
    stack = [(value, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            at = _lone_surrogate(node)
            if at is not None:
                raise _not_text(_path(field, where), node, at)
        elif isinstance(node, dict):
            for key, child in node.items():
                at = _lone_surrogate(key)
                if at is not None:
                    raise _not_text(f"{_path(field, where)} (a key)", key, at)
                stack.append((child, (*where, key)))
        elif isinstance(node, list):
            stack.extend((child, (*where, n)) for n, child in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise bad(_path(field, where), f"NaN and infinities are not JSON numbers (got {node})")


def parse_json(data: bytes | str, field: str, limits: Limits):
    """A JSON text (a body, or a form field holding JSON) as checked Python values, or a 400."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _undecodable(field, bytes(data), exc) from None
        data = data.removeprefix("\ufeff")  # a UTF-8 byte order mark may be ignored (RFC 8259)
    try:
        value = jsonio.loads(data, field, max_bytes=limits.max_json_bytes, max_depth=limits.max_json_depth)
    except InputError as exc:
        raise ApiError(400, "invalid_json", shorten(str(exc), 300)) from None
    check_strings(value, field)
    return value


# ---- bodies -------------------------------------------------------------------------------------------
def _too_large(limit: int, declared: int | None = None) -> ApiError:
    size = f"of {human_size(declared)} " if declared is not None else ""
    # Connection: close - the rest of the body is not read; the server does not wait for it either.
    return ApiError(413, "too_large", f"JSON body {size}is larger than the limit of {human_size(limit)}",
                    {"Connection": "close"})


def _gone() -> ApiError:
    return ApiError(400, "incomplete_body", "the client closed the connection before sending the whole body")


def _content_length(request: Request) -> int | None:
    try:
        return int(request.headers.get("content-length", ""))
    except ValueError:
        return None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) at once when its Content-Length is over ``limit`` and, whatever it
    declared, as soon as more than ``limit`` bytes have arrived."""
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise _too_large(limit, declared)
    chunks, size = [], 0
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except ClientDisconnect:
        raise _gone() from None
    return b"".join(chunks)


async def json_object(request: Request, limits: Limits, allowed: set) -> dict:
    data = parse_json(await read_body(request, limits.max_json_bytes), BODY, limits)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, got {_kind(data)}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad(shorten(unknown[0]), f"unknown field (expected: {', '.join(sorted(allowed))})")
    return data


_KINDS = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
          bool: "a boolean", type(None): "null"}


def _kind(value) -> str:
    return _KINDS.get(type(value), type(value).__name__)


class _StrictMultiPart(MultiPartParser):
    """Starlette's multipart parser, except that a text field that is not valid text in its charset
    (UTF-8 unless the request says otherwise) is refused instead of silently read as Latin-1."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is not None:
            return super().on_part_end()
        name, charset = part.field_name, self._charset or "utf-8"
        try:
            value = bytes(part.data).decode(charset)
        except UnicodeDecodeError as exc:
            raise _undecodable(shorten(name), bytes(part.data), exc, charset) from None
        check_strings(value, shorten(name))
        self.items.append((name, value))


async def form(request: Request, limits: Limits, max_files: int = 1) -> FormData:
    """The multipart form (text fields checked as text); a malformed one is a 400."""
    try:
        async with aclosing(request.stream()) as stream:
            parser = _StrictMultiPart(request.headers, stream, max_files=max_files,
                                      max_fields=2 * limits.max_items + 8, max_part_size=limits.max_json_bytes)
            return await parser.parse()
    except ApiError:
        raise
    except ClientDisconnect:
        raise _gone() from None
    except Exception as exc:  # noqa: BLE001 - MultiPartException, and python-multipart's various types
        problem = exc.message if isinstance(exc, MultiPartException) else str(exc)
        raise ApiError(400, "invalid_multipart", f"cannot read the multipart form ({shorten(problem)})") from None


async def upload_bytes(value, field: str = "image") -> bytes:
    if not isinstance(value, UploadFile):
        raise bad(field, "expected a file part (multipart/form-data with a filename)")
    data = await value.read()
    if not data:
        raise ApiError(422, "invalid_image", f"{field}: the file is empty")
    return data


# ---- fields -------------------------------------------------------------------------------------------
def text(value, limits: Limits, field: str = "text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(field, f"expected a non-empty string like 'sky, clouds', got {shorten(value)}")
    if len(value) > limits.max_text_chars:
        raise bad(field, f"{len(value)} characters, more than the limit of {limits.max_text_chars}")
    return value


_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only (int() would also take "٥", " 5", "+5", "5_0")


def k(value, limits: Limits, default: int | None = 10, *, form: bool = False, field: str = "k") -> int | None:
    """A count from 1 to ``max_k``: a JSON integer (not a bool, float or string), or ASCII digits in a form."""
    if value is None:
        return default
    if form:
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise bad(field, f"expected an integer from 1 to {limits.max_k} in digits 0-9, got {shorten(value)}")
        value = int(value) if len(value) <= 9 else limits.max_k + 1
    elif not isinstance(value, int) or isinstance(value, bool):
        raise bad(field, f"expected a JSON integer from 1 to {limits.max_k}, got {_kind(value)} {shorten(value)}")
    if not 1 <= value <= limits.max_k:
        raise bad(field, f"expected an integer from 1 to {limits.max_k}, got {shorten(value)}")
    return value


def target(value) -> str | None:
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if not isinstance(value, str) or value not in ("image", "text"):
        raise bad("target", f"expected 'image' or 'text', got {shorten(value)}")
    return value


def labels(value, known, limits: Limits, form: bool = False) -> list | None:
    """A label filter: a JSON list of strings, or a comma-separated string in a form; every label must exist."""
    if value is None or (isinstance(value, list) and not value) or (form and isinstance(value, str) and not value):
        return None
    if form and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad("labels", f"expected a list of label names, got {shorten(value)}")
    if len(value) > limits.max_labels:
        raise bad("labels", f"{len(value)} labels, more than the limit of {limits.max_labels}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ApiError(422, "unknown_label", f"labels: {shorten(unknown[0])!s} is not a label of this model "
                       "(see GET /v1/labels)")
    return list(dict.fromkeys(value)) or None


def item_id(value, limits: Limits, field: str = "id") -> str:
    """An id as given (in a body or the path): a string the indexes accept as an id, else a 400 here
    rather than a 422 from the index (the same rule: ``indexes.inputs.item_key``)."""
    if not isinstance(value, str) or not value.strip():
        raise bad(field, f"expected a non-empty string, got {shorten(value)}")
    if len(value) > limits.max_id_chars or any(ord(c) < 32 for c in value):
        raise bad(field, f"ids are at most {limits.max_id_chars} printable characters, got {shorten(value)}")
    try:
        item_key(value)  # also refuses lone surrogates (a body's strings are all checked before)
    except InputError as exc:
        raise bad(field, str(exc)) from None
    return value


RESERVED = ("path", "predicted_labels", "text", "tags")


def metadata(value, limits: Limits, field: str = "metadata") -> dict:
    """Client metadata: a small JSON object (a form field holds it as JSON text, read like a JSON body);
    the keys the service fills itself are refused."""
    if value is None or (isinstance(value, str) and value == ""):
        return {}
    if isinstance(value, str):
        value = parse_json(value, field, limits)  # from a form (a JSON body's values are checked already)
    if not isinstance(value, dict):
        raise bad(field, f"expected a JSON object, got {shorten(value)}")
    taken = [key for key in RESERVED if key in value]
    if taken:
        raise bad(field, f"{taken[0]!r} is set by the server and cannot be given")
    if "labels" in value and (not isinstance(value["labels"], list)
                              or not all(isinstance(x, str) for x in value["labels"])):
        raise bad(field, "'labels' must be a list of label names")
    if len(json.dumps(value)) > limits.max_metadata_bytes:
        raise bad(field, f"larger than {limits.max_metadata_bytes} bytes as JSON")
    return value
