"""catalog's internal HTTP routes (behind the gateway).

Reads are public and cache-aside; writes are admin-only (handlers.py holds both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt

from eventshop.platform.http import Admin, StrictBody
from eventshop.platform.service import Context, CorrelationId
from eventshop.services.catalog import domain, handlers
from eventshop.services.catalog.domain import PageRequest, Product, ProductDetails

router = APIRouter()

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
        return cls.model_validate(product, from_attributes=True)


class ProductPage(BaseModel):
    items: list[ProductOut]
    limit: int
    offset: int
    total: int


@router.get("/products")
async def list_products(
    ctx: Context,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE_SIZE)] = domain.DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    include_inactive: bool = False,
) -> ProductPage:
    (items, total), hit = await handlers.list_products(
        ctx, PageRequest(limit, offset, include_inactive)
    )
    response.headers["X-Cache"] = "hit" if hit else "miss"
    return ProductPage(
        items=[ProductOut.of(p) for p in items], limit=limit, offset=offset, total=total
    )


@router.get("/products/{sku}")
async def get_product(ctx: Context, sku: Sku, response: Response) -> ProductOut:
    """A product whatever its `active` flag: a shopper following an old link learns it is
    no longer sold rather than meeting a 404."""
    product, hit = await handlers.get_product(ctx, sku)
    response.headers["X-Cache"] = "hit" if hit else "miss"
    return ProductOut.of(product)


@router.post("/products", status_code=201)
async def create_product(
    ctx: Context, body: NewProduct, who: Admin, correlation_id: CorrelationId, response: Response
) -> ProductOut:
    details = ProductDetails(body.name, body.price_minor, body.currency, body.active)
    product = await handlers.create_product(ctx, correlation_id, body.sku, details)
    response.headers["Location"] = f"/products/{product.sku}"
    return ProductOut.of(product)


@router.put("/products/{sku}")
async def update_product(
    ctx: Context, sku: Sku, body: ProductChange, who: Admin, correlation_id: CorrelationId
) -> ProductOut:
    wanted = ProductDetails(body.name, body.price_minor, body.currency, body.active)
    return ProductOut.of(await handlers.update_product(ctx, correlation_id, sku, wanted))
