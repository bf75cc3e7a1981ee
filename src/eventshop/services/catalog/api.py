"""catalog's internal HTTP routes (behind the gateway).

Reads are public and cache-aside (cache.py); writes are admin-only, commit the product and its
event in one transaction, and only then refresh the cache, so the cache never runs ahead of
the database.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt

from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.platform.http import (
    Admin,
    ApiError,
    StrictBody,
    correlation_id_of,
    install_conventions,
    not_found,
)
from eventshop.platform.runtime import ServiceContext
from eventshop.platform.uow import UnitOfWork
from eventshop.services.catalog import domain, store
from eventshop.services.catalog.cache import RedisProductCache
from eventshop.services.catalog.domain import PageRequest, Product, ProductDetails
from eventshop.services.catalog.settings import CatalogSettings

#: skus appear in URLs and cache keys: letters, digits, '.', '_' and '-' only
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: a bound that keeps a price far from bigint overflow (10^12 minor units = 10^10 units)
MAX_PRICE_MINOR = 10**12

Sku = Annotated[str, Path(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# strict: a price sent as "12" or 12.5 is a client bug, not something to coerce
PriceMinor = Annotated[StrictInt, Field(ge=0, le=MAX_PRICE_MINOR)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class NewProduct(StrictBody):
    sku: str = Field(pattern=SKU_PATTERN)
    name: Name
    price_minor: PriceMinor
    currency: CurrencyCode
    active: StrictBool = True


class ProductChange(StrictBody):
    """A full update: every field is required, so an omitted one is never silently reset."""

    name: Name
    price_minor: PriceMinor
    currency: CurrencyCode
    active: StrictBool


class ProductOut(BaseModel):
    sku: str
    name: str
    price_minor: int
    currency: str
    active: bool
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        return cls(
            sku=product.sku,
            name=product.name,
            price_minor=product.price_minor,
            currency=product.currency,
            active=product.active,
            version=product.version,
            updated_at=product.updated_at,
        )


class ProductPage(BaseModel):
    items: list[ProductOut]
    limit: int
    offset: int
    total: int


def product_cache(ctx: ServiceContext) -> RedisProductCache:
    """The cache over the Redis client on_start made (tests may pass their own settings)."""
    settings = ctx.extras.get("catalog_settings") or CatalogSettings()
    return RedisProductCache(
        ctx.extras["redis"], prefix=settings.cache_prefix, ttl_s=settings.cache_ttl_s
    )


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="catalog")
    install_conventions(app)
    cache = product_cache(ctx)
    app.state.product_cache = cache

    @app.get("/products")
    async def list_products(
        response: Response,
        limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE_SIZE)] = domain.DEFAULT_PAGE_SIZE,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        include_inactive: bool = False,
    ) -> ProductPage:
        asked = PageRequest(limit, offset, include_inactive)
        read_started = time.monotonic()
        generation = await cache.list_generation()  # before the database: see cache.py
        page = await cache.cached_page(generation, asked)
        response.headers["X-Cache"] = "hit" if page is not None else "miss"
        if page is None:
            async with ctx.pool.acquire() as conn:
                page = await store.list_products(conn, asked)
            await cache.remember_page(generation, asked, page, read_started=read_started)
        items, total = page
        return ProductPage(
            items=[ProductOut.of(p) for p in items], limit=limit, offset=offset, total=total
        )

    @app.get("/products/{sku}")
    async def get_product(sku: Sku, response: Response) -> ProductOut:
        """A product whatever its `active` flag: a shopper following an old link learns it is
        no longer sold rather than meeting a 404."""
        cached = await cache.cached_product(sku)
        if cached is not None:
            response.headers["X-Cache"] = "hit"
            return ProductOut.of(cached)
        read_started = time.monotonic()
        async with ctx.pool.acquire() as conn:
            product = await store.find_product(conn, sku)
        if product is None:
            # not cached: a product created a moment later must not be hidden by a cached 404
            raise not_found(f"product {sku}")
        await cache.remember_product(product, read_started=read_started)
        response.headers["X-Cache"] = "miss"
        return ProductOut.of(product)

    @app.post("/products", status_code=201)
    async def create_product(
        body: NewProduct, who: Admin, request: Request, response: Response
    ) -> ProductOut:
        details = ProductDetails(body.name, body.price_minor, body.currency, body.active)
        async with UnitOfWork.begin(
            ctx.pool, service=ctx.name, correlation_id=correlation_id_of(request)
        ) as uow:
            product = await store.add_product(uow.conn, body.sku, details)
            if product is None:
                raise ApiError(409, "conflict", f"product {body.sku} already exists")
            uow.emit(
                ProductCreated(
                    sku=product.sku,
                    name=product.name,
                    price_minor=product.price_minor,
                    currency=product.currency,
                    active=product.active,
                    version=product.version,
                ),
                aggregate_id=product.sku,
            )
        await cache.product_changed(product)  # after the commit: never cache what may roll back
        response.headers["Location"] = f"/products/{product.sku}"
        return ProductOut.of(product)

    @app.put("/products/{sku}")
    async def update_product(
        sku: Sku, body: ProductChange, who: Admin, request: Request
    ) -> ProductOut:
        wanted = ProductDetails(body.name, body.price_minor, body.currency, body.active)
        async with UnitOfWork.begin(
            ctx.pool, service=ctx.name, correlation_id=correlation_id_of(request)
        ) as uow:
            current = await store.product_for_update(uow.conn, sku)
            if current is None:
                raise not_found(f"product {sku}")
            revised = domain.revise(current, wanted, now=datetime.now(UTC))
            if revised is not None:
                await store.save_revision(uow.conn, revised)
                uow.emit(
                    ProductUpdated(
                        sku=revised.sku,
                        name=revised.name,
                        price_minor=revised.price_minor,
                        currency=revised.currency,
                        active=revised.active,
                        version=revised.version,
                    ),
                    aggregate_id=revised.sku,
                )
        if revised is None:
            return ProductOut.of(current)  # nothing changed: no new version, no event
        await cache.product_changed(revised)
        return ProductOut.of(revised)

    return app
