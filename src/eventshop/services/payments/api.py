"""payments' internal HTTP routes (behind the gateway): the caller's own payments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel

from eventshop.platform.http import Caller
from eventshop.platform.service import Context
from eventshop.services.payments import handlers

router = APIRouter()


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


@router.get("/payments")
async def my_payments(
    ctx: Context, who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[PaymentView]:
    return [_view(r) for r in await handlers.payments_of(ctx, who.user_id, limit)]


@router.get("/payments/{payment_id}")
async def get_payment(ctx: Context, payment_id: str, who: Caller) -> PaymentView:
    return _view(await handlers.payment_seen_by(ctx, who, payment_id))


def _view(row: asyncpg.Record) -> PaymentView:
    fields = {k: v for k, v in dict(row).items() if k != "user_id"}
    return PaymentView(**fields)
