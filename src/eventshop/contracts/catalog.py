"""Events the catalog service publishes. Prices are integers in minor units (cents)."""

from __future__ import annotations

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


@registry.event("product.created", version=1)
class ProductCreated(EventPayload):
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(max_length=200)
    price_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    active: bool = True


@registry.event("product.updated", version=1)
class ProductUpdated(EventPayload):
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(max_length=200)
    price_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    active: bool = True
