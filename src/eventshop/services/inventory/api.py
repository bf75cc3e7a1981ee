"""inventory's internal HTTP routes (behind the gateway): stock levels and restocking."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StrictInt

from eventshop.platform.http import Admin, Caller, StrictBody
from eventshop.platform.service import Context, CorrelationId
from eventshop.services.inventory import handlers
from eventshop.services.inventory.domain import StockLevel

router = APIRouter()

MAX_PAGE_SIZE = 100
MAX_RESTOCK = 1_000_000

Sku = Annotated[str, Path(min_length=1, max_length=64)]


class Restock(StrictBody):
    # strict: "5" or 5.0 is a client bug, not something to coerce
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_RESTOCK)]


class StockOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    sold: int
    #: what a new order can reserve now
    available: int
    #: every unit ever restocked: on_hand + reserved + sold always adds up to it
    restocked_total: int

    @classmethod
    def of(cls, level: StockLevel) -> StockOut:
        return cls(
            sku=level.sku,
            on_hand=level.on_hand,
            reserved=level.reserved,
            sold=level.sold,
            available=level.available,
            restocked_total=level.restocked_total,
        )


class StockPage(BaseModel):
    items: list[StockOut]
    limit: int
    offset: int
    total: int


@router.get("/stock")
async def list_stock(
    ctx: Context,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> StockPage:
    levels, total = await handlers.stock_levels(ctx, limit=limit, offset=offset)
    return StockPage(
        items=[StockOut.of(s) for s in levels], limit=limit, offset=offset, total=total
    )


@router.get("/stock/{sku}")
async def get_stock(ctx: Context, sku: Sku, who: Caller) -> StockOut:
    return StockOut.of(await handlers.stock_of(ctx, sku))


@router.post("/stock/{sku}/restock")
async def restock(
    ctx: Context, correlation_id: CorrelationId, sku: Sku, body: Restock, who: Admin
) -> StockOut:
    """Add units on hand (admin); 404 for a sku inventory has not heard of."""
    return StockOut.of(await handlers.restock(ctx, correlation_id, sku, body.quantity))
