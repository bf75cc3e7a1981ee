"""The gateway's request bodies are the services' own, field for field: what /docs promises is
exactly what the owning service takes (the gateway validates first, the service again)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from eventshop.services.archive import api as archive
from eventshop.services.catalog import api as catalog
from eventshop.services.gateway import api as gateway
from eventshop.services.inventory import api as inventory
from eventshop.services.orders import api as orders
from eventshop.services.users import api as users


def _rules(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """A JSON schema with its nested models inlined (their class names may differ) and without
    what only names or explains (titles, descriptions)."""
    if isinstance(schema, dict):
        defs = {**(defs or {}), **schema.get("$defs", {})}
        if "$ref" in schema:
            return _rules(defs[schema["$ref"].removeprefix("#/$defs/")], defs)
        return {
            k: _rules(v, defs)
            for k, v in schema.items()
            if k not in ("title", "description", "$defs")
        }
    if isinstance(schema, list):
        return [_rules(v, defs) for v in schema]
    return schema


PAIRS = [
    (gateway.Registration, users.Registration),
    (gateway.Login, users.Credentials),
    (gateway.NewProduct, catalog.NewProduct),
    (gateway.ProductChange, catalog.ProductChange),
    (gateway.Restock, inventory.Restock),
    (gateway.PlaceOrder, orders.PlaceOrder),
    (gateway.Replay, archive.ReplayRequest),
]


@pytest.mark.parametrize(
    "at_gateway, at_service", PAIRS, ids=[f"{a.__name__}={b.__name__}" for a, b in PAIRS]
)
def test_the_gateway_takes_what_the_service_takes(
    at_gateway: type[BaseModel], at_service: type[BaseModel]
) -> None:
    assert _rules(at_gateway.model_json_schema()) == _rules(at_service.model_json_schema())
