"""The public API, fuzzed from its own OpenAPI document against the running platform:
schemathesis generates requests (valid and invalid) for every operation, as a customer and as an
admin, and every check it has must pass: no 5xx, no answer that breaks the document's schema, no
status the document does not declare, no content type it does not declare.

Small in CI (a fixed seed, a few examples per operation); EVENTSHOP_FUZZ_EXAMPLES raises it.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from eventshop.services.gateway.edge import public_openapi
from eventshop.tooling import supervise
from eventshop.tooling.shopclient import ADMIN, ADMIN_PASSWORD

pytestmark = pytest.mark.e2e

BASE_URL = "http://127.0.0.1:8000"
EXAMPLES = int(os.environ.get("EVENTSHOP_FUZZ_EXAMPLES", "8"))
PASSWORD = "fuzzing password 1"

_document = public_openapi()
assert _document is not None, "the gateway's openapi.json is missing: eventshop openapi"
# Valid data may still break a rule JSON Schema cannot say (an unknown sku, an e-mail's domain,
# as-of's "exactly one of version and at", each in the operation's description): that is a 422
# in the error shape, as the document declares, not a failure to accept valid data.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
            }
        }
    }
)
# logging out would end the session every other case uses; it is tested on its own elsewhere
schema = schemathesis.openapi.from_dict(_document, config=CONFIG).exclude(
    path="/api/v1/auth/logout"
)


def _token(email: str, password: str = PASSWORD) -> str:
    with httpx.Client(base_url=BASE_URL, timeout=20) as client:
        client.post(
            "/api/v1/auth/register", json={"email": email, "password": password, "name": "F"}
        )
        r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def tokens(platform: supervise.Layout) -> dict[str, str]:
    return {
        "customer": _token(f"fuzz-{uuid.uuid4().hex[:8]}@example.com"),
        "admin": _token(ADMIN, ADMIN_PASSWORD),  # the demo's admin (users' admin_emails)
    }


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same requests every run: a failure is reproducible
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_document_says(case: Any, tokens: dict[str, str]) -> None:
    for who in ("customer", "admin"):
        case.call_and_validate(
            base_url=BASE_URL, headers={"Authorization": f"Bearer {tokens[who]}"}
        )
