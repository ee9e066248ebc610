"""Fuzz the whole OpenAPI surface (/v1, /v2, health) with schemathesis: whatever a client sends,
the server never answers 5xx, and every answer has a status code, content type, headers and body
that the OpenAPI document declares. Bounded: a fixed number of derandomized examples per operation."""

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cifar_cnn.predict import load
from cifar_cnn.serve import create_app

KEY = "fuzz-key"
SERVED = {"model_name": "cifar-cnn", "model_version": "1"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def api_schema(model_file):
    app = create_app(load(model_file), api_key=KEY, rate_limit=1000, max_upload_bytes=2**20)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


# (Hypothesis strategies per operation rather than schemathesis' pytest plugin, whose lazy fixture
# loading does not run on pytest 9.)
def test_every_operation_answers_as_documented(api_schema):
    seen = []
    for operation in operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def answers_as_documented(case):
            # Name the served model (unknown names are answered 404 before any body is looked at).
            case.path_parameters = {**(case.path_parameters or {}), **SERVED} if case.path_parameters else None
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

        answers_as_documented()
        seen.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /v1/predict", "GET /v1/models", "POST /v2/models/{model_name}/infer"} <= set(seen), seen


def test_without_a_key_only_open_routes_answer(api_schema):
    for operation in operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(max_examples=5, deadline=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def refused_without_key(case):
            response = case.call()
            assert response.status_code < 500
            if not case.path.startswith(("/healthz", "/readyz", "/v2/health")):
                assert response.status_code == 401, (case.method, case.path, response.status_code)

        refused_without_key()
