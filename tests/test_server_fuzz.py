"""Schemathesis against /openapi.json of a real server: no 500s, every answer as documented (bounded); and
its stateful mode, which follows the schema's links from POST /v1/items to the items just added."""
from __future__ import annotations

import io
import unicodedata
from urllib.parse import quote

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                         status_code_conformance)

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from dagnn_runtime.server.openapi import openapi_schema  # noqa: E402
from serve_helpers import served_factory_index  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory, bundle_dir, model, data_dir):
    with served_factory_index(tmp_path_factory, bundle_dir, model, data_dir, "fuzz") as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


# negative cases only where there is an input to break (a body or a path parameter)
OPERATIONS = [(path, method, mode) for path, methods in openapi_schema("test")["paths"].items()
              for method, op in methods.items()
              for mode in (["positive", "negative"] if "requestBody" in op or "parameters" in op else ["positive"])]


@pytest.mark.parametrize("path, method, mode", OPERATIONS, ids=[f"{m.upper()} {p} {g}" for p, m, g in OPERATIONS])
def test_api_conforms_to_its_schema(api_schema, path, method, mode):
    """Positive and negative cases per operation (schemathesis' pytest plugin does not run on this pytest,
    so the cases are drawn with hypothesis directly)."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=CHECKS, timeout=30)

    check()


# ---- stateful: add items, then remove them (and ask for their image) through the schema's links ----------
def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 14), (30, 160, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _usable_id(value: str) -> str:
    """``value`` without the characters no index takes (controls, unassigned, ...), prefixed so that it does not
    collide with the served data set's ids: the rest (slashes, '%', '?', '#', spaces, any script) is kept, so
    the links carry awkward ids into DELETE /v1/items/{item_id}."""
    kept = "".join(c for c in value if c.isprintable() and unicodedata.category(c) not in ("Co", "Cn"))
    return ("st-" + kept)[:200]


def test_stateful_add_then_remove_follows_the_links(tmp_path_factory, live):
    """Random scenarios of POST /v1/items then, through the 201 answer's links, DELETE /v1/items/{id} and GET
    /v1/items/{id}/image: no 500 and every answer as documented. Random texts almost never hold a known tag
    and random bytes are not photos, so before each add the texts get a known tag in front, the image parts
    become a real PNG and the ids lose the characters no index accepts; everything else is as generated."""
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    schema.config.generation.update(modes=["positive"])
    png, calls = _png(), []

    class AddThenRemove(schema.as_state_machine()):
        def before_call(self, case):
            if case.method == "POST" and case.path == "/v1/items" and isinstance(case.body, dict):
                for item in case.body.get("items", []) if isinstance(case.body.get("items"), list) else []:
                    if isinstance(item, dict) and isinstance(item.get("text"), str):
                        item["text"] = ("sky, " + item["text"])[:1000]
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        item["id"] = _usable_id(item["id"])
                if isinstance(case.body.get("image"), list):
                    case.body["image"] = [png for _ in case.body["image"]]
                if isinstance(case.body.get("id"), list):
                    case.body["id"] = [_usable_id(i) if isinstance(i, str) else i for i in case.body["id"]]

        def setup(self):
            self.added = []

        def after_call(self, response, case):
            super().after_call(response, case)
            calls.append((case.method, case.path, response.status_code))
            if case.method == "POST" and response.status_code == 201:
                self.added += response.json()["added"]

        def teardown(self):
            # each scenario starts from the same index: the same adds succeed again when hypothesis replays
            # a scenario (otherwise a 409 the second time changes which links can be followed)
            for item_id in self.added:
                assert httpx.delete(f"{live.url}/v1/items/{quote(item_id, safe='')}", timeout=30).status_code \
                    in (200, 404)
            super().teardown()

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    AddThenRemove.run(settings=settings(max_examples=30, stateful_step_count=6, deadline=None, database=None,
                                        derandomize=True, suppress_health_check=list(HealthCheck)))
    assert all(status != 500 for _, _, status in calls)
    assert ("POST", "/v1/items", 201) in calls, calls  # adds succeeded ...
    assert ("DELETE", "/v1/items/{item_id}", 200) in calls, calls  # ... and the link removed what they added
