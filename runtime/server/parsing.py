"""Reading and checking request bodies: JSON objects and multipart forms, within the service's limits.

Every refusal names the field and quotes at most 80 characters of what was sent. Malformed requests are
400; well-formed ones the model cannot use (unknown label, no known tag, undecodable image) are 422.
"""
from __future__ import annotations

import json

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .errors import ApiError, shorten
from .limits import Limits

MULTIPART = "multipart/form-data"
JSON = "application/json"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def bad(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {problem}")


async def json_object(request: Request, limits: Limits, allowed: set) -> dict:
    body = await request.body()
    if len(body) > limits.max_json_bytes:
        raise ApiError(413, "too_large", f"JSON body of {len(body)} bytes is larger than {limits.max_json_bytes}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({shorten(str(exc))})") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad(shorten(unknown[0]), f"unknown field (expected: {', '.join(sorted(allowed))})")
    return data


async def form(request: Request, limits: Limits, max_files: int = 1):
    """The multipart form; a malformed one is a 400 (starlette's parser raises its own errors)."""
    try:
        return await request.form(max_files=max_files, max_fields=2 * limits.max_items + 8,
                                  max_part_size=limits.max_json_bytes)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart and starlette raise various types
        if type(exc).__name__ == "HTTPException" and getattr(exc, "status_code", 400) != 400:
            raise
        raise ApiError(400, "invalid_multipart", f"cannot read the multipart form ({shorten(str(exc))})") from exc


async def upload_bytes(value, field: str = "image") -> bytes:
    if not isinstance(value, UploadFile):
        raise bad(field, "expected a file part (multipart/form-data with a filename)")
    data = await value.read()
    if not data:
        raise ApiError(422, "invalid_image", f"{field}: the file is empty")
    return data


def text(value, limits: Limits, field: str = "text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(field, f"expected a non-empty string like 'sky, clouds', got {shorten(value)}")
    if len(value) > limits.max_text_chars:
        raise bad(field, f"{len(value)} characters, more than the limit of {limits.max_text_chars}")
    return value


def k(value, limits: Limits, default: int = 10) -> int:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise bad("k", f"expected an integer, got {shorten(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_k:
        raise bad("k", f"expected an integer from 1 to {limits.max_k}, got {shorten(value)}")
    return value


def target(value) -> str | None:
    if value in (None, ""):
        return None
    if value not in ("image", "text"):
        raise bad("target", f"expected 'image' or 'text', got {shorten(value)}")
    return value


def labels(value, known, limits: Limits, form: bool = False) -> list | None:
    """A label filter: a JSON list, or a comma-separated string in a form; every label must exist."""
    if value is None or value == [] or (form and value == ""):
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
    if not isinstance(value, str) or not value.strip():
        raise bad(field, f"expected a non-empty string, got {shorten(value)}")
    if len(value) > limits.max_id_chars or any(ord(c) < 32 for c in value):
        raise bad(field, f"ids are at most {limits.max_id_chars} printable characters, got {shorten(value)}")
    return value


RESERVED = ("path", "predicted_labels", "text", "tags")


def metadata(value, limits: Limits, field: str = "metadata") -> dict:
    """Client metadata: a small JSON object; the keys the service fills itself are refused."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad(field, f"expected a JSON object, got {shorten(value)}") from None
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
