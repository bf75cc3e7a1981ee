"""inventory's internal HTTP routes (behind the gateway): stock levels and restocking."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, Field, StrictInt

from eventshop.contracts.inventory import StockAdjusted
from eventshop.platform.http import (
    Admin,
    Caller,
    StrictBody,
    correlation_id_of,
    install_conventions,
    not_found,
)
from eventshop.platform.runtime import ServiceContext
from eventshop.platform.uow import UnitOfWork
from eventshop.services.inventory import store

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
    def of(cls, level: store.StockLevel) -> StockOut:
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


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="inventory")
    install_conventions(app)

    @app.get("/stock")
    async def list_stock(
        who: Caller,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> StockPage:
        async with ctx.pool.acquire() as conn:
            levels, total = await store.stock_levels(conn, limit=limit, offset=offset)
        return StockPage(
            items=[StockOut.of(s) for s in levels], limit=limit, offset=offset, total=total
        )

    @app.get("/stock/{sku}")
    async def get_stock(sku: Sku, who: Caller) -> StockOut:
        async with ctx.pool.acquire() as conn:
            level = await store.stock_level(conn, sku)
        if level is None:
            raise not_found(f"stock of {sku}")
        return StockOut.of(level)

    @app.post("/stock/{sku}/restock")
    async def restock(sku: Sku, body: Restock, who: Admin, request: Request) -> StockOut:
        """Add units on hand. A sku inventory has not heard of (no product.created yet) is a
        404: stock for a product that does not exist could never be sold."""
        async with UnitOfWork.begin(
            ctx.pool, service=ctx.name, correlation_id=correlation_id_of(request)
        ) as uow:
            level = await store.restock(uow.conn, sku, body.quantity)
            if level is None:
                raise not_found(f"stock of {sku}")
            uow.emit(
                StockAdjusted(
                    sku=sku, delta=body.quantity, on_hand=level.on_hand, reason="restock"
                ),
                aggregate_id=sku,
            )
        return StockOut.of(level)

    return app
