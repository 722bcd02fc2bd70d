"""Schemathesis fuzzes every operation of /openapi.json against the real app and Redis:
no 5xx, and every answer matches the document (status, content type, body schema)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from gateway import create_app
from gateway.worker import build_worker
from tests.conftest import base_config, session_redis

TOKEN = "fuzzing-token-0123456789"
FUZZ_DB = 2

# No run ends here (no worker): a ?wait= would hold each case for the whole cap.
app = create_app({**base_config(session_redis(), FUZZ_DB), "API_TOKENS": {TOKEN: "fuzz"}, "MAX_WAIT_SECONDS": 0.01})
schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
# A worker registered for every queue (none runs): /readyz is ready, not a 503.
with app.app_context():
    build_worker().register_birth()


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    # A case made invalid in its headers may be one whose bearer token was taken away: the
    # token added back would make it valid, and its acceptance a false "accepted negative
    # data". Such a case goes as generated (a 401 is then a correct refusal).
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(headers={} if negative_headers else {"Authorization": f"Bearer {TOKEN}"})
