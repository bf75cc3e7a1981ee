"""Events the catalog service publishes. Prices are integers in minor units (cents).

Each event carries the product's `version` (1 at creation, one more on every change). Delivery
order is not guaranteed across retries (a failed delivery goes round the retry ladder while
later ones pass it), so a consumer that keeps a copy of products applies an event only when
its version is newer than the copy's. The field has a default so events written before it
existed still decode (as version 1).
"""

from __future__ import annotations

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


class ProductState(EventPayload):
    """The whole product as it is after the change: both events carry it."""

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(max_length=200)
    price_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    active: bool = True
    version: int = Field(default=1, ge=1)


@registry.event("product.created", version=1)
class ProductCreated(ProductState):
    pass


@registry.event("product.updated", version=1)
class ProductUpdated(ProductState):
    pass
