"""The public API's OpenAPI document says what every route answers, and is current.

The gateway serves src/eventshop/services/gateway/openapi.json, written by eventshop/openapi.py
from the gateway's routes and the services' own documents."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from eventshop.openapi import openapi_json
from eventshop.services.gateway.edge import public_openapi

SERVED = resources.files("eventshop.services.gateway") / "openapi.json"
DOC: dict[str, Any] = json.loads(openapi_json())
OPERATIONS = [
    (f"{method.upper()} {path}", op)
    for path, ops in DOC["paths"].items()
    for method, op in ops.items()
]


def test_the_served_document_is_current() -> None:
    assert SERVED.read_text() == openapi_json(), (
        "stale: .venv/bin/eventshop openapi --output src/eventshop/services/gateway/openapi.json"
    )
    assert public_openapi() == DOC


@pytest.mark.parametrize("name, op", OPERATIONS, ids=[n for n, _ in OPERATIONS])
def test_every_success_has_its_schema(name: str, op: dict[str, Any]) -> None:
    successes = {s: a for s, a in op["responses"].items() if s.startswith("2")}
    assert successes, name
    for status, answer in successes.items():
        if status != "204":
            assert answer["content"]["application/json"]["schema"], (name, status)


@pytest.mark.parametrize("name, op", OPERATIONS, ids=[n for n, _ in OPERATIONS])
def test_every_error_the_gateway_may_answer_is_declared_in_the_one_shape(
    name: str, op: dict[str, Any]
) -> None:
    statuses = set(op["responses"])
    assert {"400", "413", "422", "429", "500", "503"} <= statuses, name
    if op.get("security") and {} not in op["security"]:
        assert "401" in statuses
    for status, answer in op["responses"].items():
        if not status.startswith("2"):
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (name, status)


def test_security_matches_each_route() -> None:
    public = {"POST /api/v1/auth/register", "POST /api/v1/auth/login"}
    optional = {"GET /api/v1/products", "GET /api/v1/products/{sku}"}
    for name, op in OPERATIONS:
        if name in public:
            assert "security" not in op, name
        elif name in optional:
            assert op["security"] == [{}, {"HTTPBearer": []}], name
        else:
            assert op["security"] == [{"HTTPBearer": []}], name


def test_the_query_parameters_a_service_takes_are_declared() -> None:
    def query(name: str) -> set[str]:
        op = dict(OPERATIONS)[name]
        return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}

    assert {"limit", "offset"} <= query("GET /api/v1/products")
    assert {"version", "at"} <= query("GET /api/v1/orders/{order_id}/as-of")
    assert {"type", "after", "limit"} <= query("GET /api/v1/events")
