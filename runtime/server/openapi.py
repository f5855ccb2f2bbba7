"""The OpenAPI 3.1 description of API v1, written out by hand (served at /openapi.json, read by /docs)."""
from __future__ import annotations

import copy

from .limits import Limits

_L = Limits()
_ERR = {"$ref": "#/components/schemas/Error"}
_TARGET = {"type": "string", "enum": ["image", "text"],
           "description": "What to retrieve. Default: the other modality than the query's, else the only index."}
_LABELS = {"type": "array", "items": {"type": "string"}, "maxItems": _L.max_labels,
           "description": "Keep only items whose stored or predicted labels include any of these (GET /v1/labels)."}
_K = {"type": "integer", "minimum": 1, "maximum": _L.max_k, "default": 10}
_ID = {"type": "string", "minLength": 1, "maxLength": _L.max_id_chars}

_MEANING = {
    400: "Malformed request: a field is missing, unknown or of the wrong type (the message names it).",
    401: "An API key is required: send 'Authorization: Bearer <key>'.",
    404: "No such item, or (adding) no index of that modality.",
    409: "An id is already in the index.",
    413: f"The body is larger than {_L.max_upload_bytes // 2**20} MB (JSON: {_L.max_json_bytes // 2**20} MB).",
    415: "Wrong Content-Type for this operation.",
    422: "Well-formed but unusable: undecodable or too large image, no known tag in a text, unknown label, "
         "no index of the target modality.",
    503: "Loading (with Retry-After), overloaded (with Retry-After), or the bundle/index failed to load.",
}


def _errors(*codes) -> dict:
    return {str(c): {"description": _MEANING[c], "content": {"application/json": {"schema": _ERR}}} for c in codes}


def _ok(schema: str, status: int = 200, description: str = "OK", links: dict | None = None) -> dict:
    answer = {"description": description,
              "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    return {str(status): {**answer, "links": links} if links else answer}


# What a client (or a stateful test) can do next with an item it added: the first id of ``added``.
_ADDED_LINKS = {
    "RemoveItem": {"operationId": "removeItem", "parameters": {"item_id": "$response.body#/added/0"},
                   "description": "Remove the first item just added."},
    "ItemImage": {"operationId": "itemImage", "parameters": {"item_id": "$response.body#/added/0"},
                  "description": "The image file of the first item just added (404 for a text item)."},
}


def _multipart(properties: dict, required: list) -> dict:
    return {"multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": required,
                                               "additionalProperties": False}}}


_IMAGE_FILE = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
               "description": "The photo (JPEG, PNG, WebP, ...)."}

_PATHS = {
    "/v1/search": {"post": {
        "summary": "Search with an image (multipart) or with tags (JSON)",
        "operationId": "search",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TextQuery"}},
            **_multipart({"image": _IMAGE_FILE, "target": _TARGET,
                          "k": {"type": "string", "pattern": "^[0-9]{1,4}$", "description": "Results, 1 to 1000."},
                          "labels": {"type": "string", "description": "Comma-separated label filter."}}, ["image"])}},
        "responses": {**_ok("SearchResponse"), **_errors(400, 401, 404, 413, 415, 422, 503)}}},
    "/v1/tag": {"post": {
        "summary": "Labels of a photo: every label's score against its calibrated threshold",
        "operationId": "tag",
        "requestBody": {"required": True, "content": _multipart(
            {"image": _IMAGE_FILE, "top": {"type": "string", "pattern": "^[0-9]{1,4}$",
                                           "description": "At most this many labels in 'labels'."}}, ["image"])},
        "responses": {**_ok("TagResponse"), **_errors(400, 401, 413, 415, 422, 503)}}},
    "/v1/items": {"post": {
        "summary": "Add images (multipart: one 'id' per 'image') or texts (JSON) to the index",
        "description": "Acknowledged (201) only once saved. Each item's predicted labels are stored in its "
                       "metadata as 'predicted_labels', so the label filter finds it.",
        "operationId": "addItems",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AddTexts"}},
            **_multipart({"image": {"type": "array", "items": _IMAGE_FILE, "maxItems": _L.max_items},
                          "id": {"type": "array", "items": _ID, "maxItems": _L.max_items},
                          "metadata": {"type": "array", "items": {"type": "string", "description": "A JSON object."},
                                       "maxItems": _L.max_items}}, ["image", "id"])}},
        "responses": {**_ok("AddResponse", 201, "Added and saved", links=_ADDED_LINKS),
                      **_errors(400, 401, 404, 409, 413, 415, 422, 503)}}},
    "/v1/items/{item_id}": {"delete": {
        "summary": "Remove an item (from every index that holds its id)",
        "operationId": "removeItem",
        "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID}],
        "responses": {**_ok("RemoveResponse"), **_errors(400, 401, 404, 503)}}},
    "/v1/items/{item_id}/image": {"get": {
        "summary": "The image file an image item was indexed from (only files registered in the index)",
        "operationId": "itemImage",
        "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID}],
        "responses": {"200": {"description": "The image", "content": {"image/*": {"schema": {
            "type": "string", "format": "binary"}}}}, **_errors(400, 401, 404, 503)}}},
    "/v1/labels": {"get": {"summary": "The model's labels and their calibrated thresholds", "operationId": "labels",
                           "responses": {**_ok("Labels"), **_errors(401, 503)}}},
    "/v1/info": {"get": {"summary": "Bundle identity, index sizes, providers, batching and limits",
                         "operationId": "info", "responses": {**_ok("Info"), **_errors(401, 503)}}},
    "/healthz": {"get": {"summary": "The process is up", "operationId": "healthz", "security": [],
                         "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": {
                             "type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}}}}}}},
    "/readyz": {"get": {"summary": "The bundle and index are loaded", "operationId": "readyz", "security": [],
                        "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"status": {"const": "ready"}}, "required": ["status"]}}}},
                            **_errors(503)}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format 0.0.4)", "operationId": "metrics",
                         "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {
                             "type": "string"}}}}, **_errors(401)}}},
}

_NUM_OR_NULL = {"type": ["number", "null"]}
_SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "TextQuery": {"type": "object", "required": ["text"], "additionalProperties": False, "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": _L.max_text_chars, "examples": ["sky, clouds"]},
        "target": _TARGET, "k": _K, "labels": _LABELS}},
    "Hit": {"type": "object", "required": ["id", "score", "metadata"], "properties": {
        "id": {"type": "string"}, "score": {"type": "number"}, "metadata": {"type": "object"}}},
    "SearchResponse": {"type": "object", "required": ["target", "results", "took_ms"], "properties": {
        "target": {"type": "string", "enum": ["image", "text"]},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        "query": {"type": "string", "description": "Text queries: the known tags used."},
        "ignored_tags": {"type": "array", "items": {"type": "string"}},
        "took_ms": {"type": "number"}}},
    "TagResponse": {"type": "object", "required": ["labels", "scores", "took_ms"], "properties": {
        "labels": {"type": "array", "items": {"type": "string"}, "description": "Labels passing their threshold."},
        "scores": {"type": "array", "items": {"type": "object", "required": ["label", "score", "threshold", "passes"],
                                              "properties": {"label": {"type": "string"}, "score": {"type": "number"},
                                                             "threshold": _NUM_OR_NULL, "passes": {"type": "boolean"}}}},
        "took_ms": {"type": "number"}}},
    "AddTexts": {"type": "object", "required": ["items"], "additionalProperties": False, "properties": {
        "items": {"type": "array", "minItems": 1, "maxItems": _L.max_items, "items": {
            "type": "object", "required": ["id", "text"], "additionalProperties": False, "properties": {
                "id": _ID, "text": {"type": "string", "minLength": 1, "maxLength": _L.max_text_chars},
                "metadata": {"type": "object", "description": "Your fields; 'labels' (a list) joins the filter."}}}}}},
    "AddResponse": {"type": "object", "required": ["added", "modality", "items"], "properties": {
        "added": {"type": "array", "items": {"type": "string"}}, "modality": {"type": ["string", "null"]},
        "items": {"type": "integer"}}},
    "RemoveResponse": {"type": "object", "required": ["removed", "from"], "properties": {
        "removed": {"type": "string"}, "from": {"type": "array", "items": {"type": ["string", "null"]}}}},
    "Labels": {"type": "object", "required": ["labels"], "properties": {"labels": {"type": "array", "items": {
        "type": "object", "required": ["label", "threshold"],
        "properties": {"label": {"type": "string"}, "threshold": _NUM_OR_NULL}}}}},
    "Info": {"type": "object", "required": ["model", "indexes", "batching", "limits", "version"], "properties": {
        "model": {"type": "object", "required": ["bundle_digest", "embedding_space", "providers"]},
        "indexes": {"type": "object"}, "batching": {"type": "object"}, "limits": {"type": "object"},
        "version": {"type": "string"}}},
}


def openapi_schema(version: str) -> dict:
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "dagnn serve", "version": version,
                 "description": "Cross-modal image-text search and tagging with a DAGNN bundle. Errors are JSON "
                                "{\"error\": {\"code\", \"message\"}}."},
        "paths": _PATHS,
        "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
    })
