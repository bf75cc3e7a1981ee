"""Catalog rules: pure, no I/O.

A product is identified by its sku and carries a version that grows by one on every change.
The version is what lets copies elsewhere (the Redis cache, orders' price list) tell an older
copy from a newer one whatever order they learn about them in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

#: the largest page a list may ask for: a bound on the work one request can cause
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


@dataclass(frozen=True)
class PageRequest:
    """Which slice of the product list a reader asks for (products in sku order)."""

    limit: int
    offset: int
    include_inactive: bool = False


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_minor: int
    currency: str
    active: bool
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class ProductDetails:
    """What an admin sets on a product (everything but its sku, version and timestamps)."""

    name: str
    price_minor: int
    currency: str
    active: bool


def details_of(product: Product) -> ProductDetails:
    return ProductDetails(product.name, product.price_minor, product.currency, product.active)


def revise(current: Product, wanted: ProductDetails, now: datetime) -> Product | None:
    """The next version of `current` with `wanted` applied, or None when nothing changes.

    An update that changes nothing keeps the version and emits no event, so a PUT repeated by
    a retrying client is a no-op rather than a stream of identical `product.updated`.
    """
    if details_of(current) == wanted:
        return None
    return replace(
        current,
        name=wanted.name,
        price_minor=wanted.price_minor,
        currency=wanted.currency,
        active=wanted.active,
        version=current.version + 1,
        updated_at=now,
    )
