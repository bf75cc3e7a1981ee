"""catalog's use cases: the product reads (cache-aside) and the admin writes that emit.

catalog handles no events. Writes commit the product and its event in one transaction and only
then refresh the cache, so the cache never runs ahead of the database; reads look in Redis
first and fill it after a database read (adapters.py says why no read goes back in time).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.platform.http import ApiError, not_found
from eventshop.services.catalog import domain, store
from eventshop.services.catalog.adapters import Page
from eventshop.services.catalog.domain import PageRequest, Product, ProductDetails

if TYPE_CHECKING:
    from eventshop.services.catalog.service import Context

StateT = TypeVar("StateT", ProductCreated, ProductUpdated)


async def list_products(ctx: Context, asked: PageRequest) -> tuple[Page, bool]:
    """One page of products, and whether it came from the cache."""
    cache = ctx.resources.cache
    read_started = time.monotonic()
    generation = await cache.list_generation()  # before the database: see adapters.py
    page = await cache.cached_page(generation, asked)
    if page is not None:
        return page, True
    async with ctx.pool.acquire() as conn:
        page = await store.list_products(conn, asked)
    await cache.remember_page(generation, asked, page, read_started=read_started)
    return page, False


async def get_product(ctx: Context, sku: str) -> tuple[Product, bool]:
    """A product whatever its `active` flag, and whether it came from the cache; 404 if none."""
    cache = ctx.resources.cache
    cached = await cache.cached_product(sku)
    if cached is not None:
        return cached, True
    read_started = time.monotonic()
    async with ctx.pool.acquire() as conn:
        product = await store.find_product(conn, sku)
    if product is None:
        # not cached: a product created a moment later must not be hidden by a cached 404
        raise not_found(f"product {sku}")
    await cache.remember_product(product, read_started=read_started)
    return product, False


async def create_product(
    ctx: Context, correlation_id: str, sku: str, details: ProductDetails
) -> Product:
    """Add a product at version 1 and announce it (product.created); 409 if the sku exists."""
    async with ctx.unit_of_work(correlation_id) as uow:
        product = await store.add_product(uow.conn, sku, details)
        if product is None:
            raise ApiError(409, "conflict", f"product {sku} already exists")
        uow.emit(_state(ProductCreated, product), aggregate_id=product.sku)
    # after the commit: never cache what may roll back
    await ctx.resources.cache.product_changed(product)
    return product


async def update_product(
    ctx: Context, correlation_id: str, sku: str, wanted: ProductDetails
) -> Product:
    """Apply a full update as the product's next version (product.updated); the product as it
    is when nothing changes (no new version, no event); 404 if there is no such product."""
    async with ctx.unit_of_work(correlation_id) as uow:
        current = await store.product_for_update(uow.conn, sku)
        if current is None:
            raise not_found(f"product {sku}")
        revised = domain.revise(current, wanted, now=datetime.now(UTC))
        if revised is not None:
            await store.save_revision(uow.conn, revised)
            uow.emit(_state(ProductUpdated, revised), aggregate_id=revised.sku)
    if revised is None:
        return current
    await ctx.resources.cache.product_changed(revised)
    return revised


def _state(kind: type[StateT], product: Product) -> StateT:
    """The whole product as both catalog events carry it (contracts.catalog.ProductState)."""
    return kind(
        sku=product.sku,
        name=product.name,
        price_minor=product.price_minor,
        currency=product.currency,
        active=product.active,
        version=product.version,
    )
