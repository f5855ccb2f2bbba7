"""Schemathesis against /openapi.json of a real server: no 500s, every answer as documented (bounded)."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                         status_code_conformance)

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from dagnn_runtime.server.openapi import openapi_schema  # noqa: E402
from serve_helpers import build_index, serve  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory, bundle_dir, model, data_dir):
    index = build_index(model, data_dir, tmp_path_factory.mktemp("fuzz-index") / "index")
    logs = tmp_path_factory.mktemp("fuzz-logs")
    with serve(bundle_dir, index, logs) as srv:
        yield srv
    assert "Traceback" not in srv.log(), srv.log()


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
