"""payments' internal HTTP routes (behind the gateway): the caller's own payments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Query
from pydantic import BaseModel

from eventshop.platform.http import Caller, install_conventions, not_found
from eventshop.platform.runtime import ServiceContext
from eventshop.services.payments import store


class PaymentView(BaseModel):
    payment_id: str
    order_id: str
    status: str
    amount_minor: int | None
    currency: str | None
    failure_reason: str | None
    failure_detail: str | None
    requested_at: datetime | None
    captured_at: datetime | None
    refunded_at: datetime | None
    updated_at: datetime


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="payments")
    install_conventions(app)

    @app.get("/payments")
    async def my_payments(
        who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> list[PaymentView]:
        async with ctx.pool.acquire() as conn:
            rows = await store.payments_of(conn, who.user_id, limit)
        return [_view(r) for r in rows]

    @app.get("/payments/{payment_id}")
    async def get_payment(payment_id: str, who: Caller) -> PaymentView:
        async with ctx.pool.acquire() as conn:
            row = await store.get_payment(conn, payment_id)
        if row is None or not (who.is_admin or row["user_id"] == who.user_id):
            raise not_found("payment")
        return _view(row)

    return app


def _view(row: asyncpg.Record) -> PaymentView:
    fields = {k: v for k, v in dict(row).items() if k != "user_id"}
    return PaymentView(**fields)
