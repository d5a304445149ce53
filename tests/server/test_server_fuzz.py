"""Property-based API testing with schemathesis: no generated request gets a 5xx answer.

Requests are built from the app's own OpenAPI schema and sent through ASGI to an app whose
lifespan runs (store, artifacts) with no workers, so accepted jobs stay queued. Marked slow:
``-m slow`` runs it. (schemathesis's own pytest loader does not work with pytest 9 yet, so the
operations are driven through Hypothesis directly.)
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from server_util import settings_for
from starlette.testclient import TestClient

from server.app import create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app = create_app(settings_for(tmp_path_factory.mktemp("fuzz") / "data", workers=0,
                                  max_request_bytes=1 << 20))
    with TestClient(app):  # runs the lifespan: the ASGI calls below find the store ready
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_route_is_fuzzed(api_schema):
    found = {(op.method.upper(), op.path) for op in operations(api_schema)}
    assert ("POST", "/v1/verifications") in found and ("GET", "/metrics") in found
    assert len(found) >= 12


def fuzz(operation, mode) -> set[int]:
    """Send generated requests for one operation; the status codes seen (none 5xx).
    ``mode``: positive (schema-valid) or negative (schema-violating) requests."""
    codes: set[int] = set()

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call()
        codes.add(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: "
            f"{response.text[:500]}")

    try:
        check()
    except Unsatisfiable:
        if mode.value == "positive":
            raise  # negative mode has nothing to violate on routes without parameters
    return codes


def test_no_server_errors(api_schema):
    """Each operation gets generated requests (valid and invalid); none may answer 5xx."""
    from schemathesis.generation import GenerationMode

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        seen = {f"{op.method.upper()} {op.path}": fuzz(op, mode)
                for op in operations(api_schema)}
        assert mode.value == "negative" or all(seen.values()), seen
