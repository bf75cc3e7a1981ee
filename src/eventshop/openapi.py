"""The public API's OpenAPI document: the gateway's routes, each with what its service answers.

The gateway relays each service's answer as it is, so what a route answers is the owning
service's to say. This module composes the document the gateway serves at /openapi.json from
the gateway's routes (paths, bodies, security) and, for each, the service operation it forwards
to (named by the route's `x-upstream`, e.g. "orders GET /orders/{order_id}"): its success
responses with their schemas, its query parameters, and the error statuses it may answer. Every
operation also lists the statuses the gateway itself answers (400, 413, 422, 429, 503; 401 and
403 where a token is asked for), all in the one error shape.

The gateway may import no service, so it does not compose the document itself: it serves the
file this module writes (`eventshop openapi --output src/eventshop/services/gateway/openapi.json`),
and tests/unit/test_openapi_doc.py fails when that file is stale.
"""

from __future__ import annotations

import copy
import importlib
import json
from typing import Any

from fastapi import FastAPI

from eventshop.services import BACKENDS

GATEWAY_OPENAPI = "eventshop.services.gateway"
OPENAPI_FILE = "openapi.json"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "correlation_id"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {}},
            },
        },
        "correlation_id": {"type": "string"},
    },
}

#: what the gateway itself may answer on any route, before or instead of the service
GATEWAY_STATUSES = {
    "400": "a malformed request: a NUL in the URL, a body that is not JSON or not UTF-8",
    "413": "the body is over 64 KB",
    "422": "the request breaks the rules of its parameters or body",
    "429": "too many requests from this client or user: see Retry-After",
    "500": "an internal error (the operators are told)",
    "503": "a service (or Redis) is unavailable: retry",
}
AUTH_STATUSES = {"401": "no valid token, or its session ended", "403": "an admin's route"}


def _app_of(module: str) -> FastAPI:
    router = importlib.import_module(f"{module}.api").router
    app = FastAPI()
    app.include_router(router)
    return app


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/components/schemas/", f"#/components/schemas/{prefix}")
                if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v, prefix)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def build_openapi() -> dict[str, Any]:
    """The public API's document, composed as the module's docstring says."""
    doc = _app_of(GATEWAY_OPENAPI).openapi()
    gateway = importlib.import_module(f"{GATEWAY_OPENAPI}.api")
    doc["info"] = {"title": gateway.TITLE, "version": "1", "summary": gateway.SUMMARY}
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    upstream_docs = {
        name: _rewrite_refs(_app_of(f"eventshop.services.{name}").openapi(), f"{name}.")
        for name in BACKENDS
    }
    for name, upstream in upstream_docs.items():
        for schema_name, schema in upstream.get("components", {}).get("schemas", {}).items():
            schemas[f"{name}.{schema_name}"] = schema
    for operations in doc["paths"].values():
        for operation in operations.values():
            _complete(operation, upstream_docs)
    _drop_unused(doc)
    return doc


def _complete(operation: dict[str, Any], upstream_docs: dict[str, dict[str, Any]]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if operation.pop("x-auth", None) == "optional":  # anonymous callers welcome, tokens checked
        operation["security"] = [{}, {"HTTPBearer": []}]
    target = operation.pop("x-upstream", None)
    if target is not None:
        service, method, path = target.split(" ")
        upstream = upstream_docs[service]["paths"][path][method.lower()]
        for status, answer in upstream.get("responses", {}).items():
            if status.startswith("2"):
                responses[status] = copy.deepcopy(answer)  # its body is the service's own
            elif status not in responses and status != "422":
                responses[status] = _error(answer.get("description") or "the service refused")
        declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        for parameter in upstream.get("parameters", []):
            if parameter["in"] == "query" and ("query", parameter["name"]) not in declared:
                operation.setdefault("parameters", []).append(copy.deepcopy(parameter))
    for status, description in GATEWAY_STATUSES.items():
        responses[status] = _error(description)
    if operation.get("security"):
        for status, description in AUTH_STATUSES.items():
            if status == "401" or status in responses:
                responses[status] = _error(description)
    for status, answer in list(responses.items()):
        if not status.startswith("2") and "content" not in answer:
            responses[status] = _error(answer.get("description", "refused"))
    operation["responses"] = dict(sorted(responses.items()))


def _drop_unused(doc: dict[str, Any]) -> None:
    """Components no operation reaches (the services' request bodies, internal routes)."""
    schemas = doc["components"]["schemas"]
    used: set[str] = set()
    pending = [doc["paths"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.removeprefix("#/components/schemas/")
                if name not in used:
                    used.add(name)
                    pending.append(schemas[name])
            pending.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            pending.extend(node)
    doc["components"]["schemas"] = {k: schemas[k] for k in sorted(used)}


def openapi_json() -> str:
    return json.dumps(build_openapi(), indent=1, sort_keys=True) + "\n"
