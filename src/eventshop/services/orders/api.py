"""orders' internal HTTP routes (behind the gateway).

Each route calls one of handlers.py's use cases: POST /orders is `handlers.place_order` (the
saga goes on from events, and the caller polls GET /orders/{id}).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StrictInt, field_validator

from eventshop.contracts.common import Line
from eventshop.platform.http import (
    PG_INT_MAX,
    ApiError,
    Caller,
    IsoDatetime,
    StrictBody,
)
from eventshop.platform.service import Context, CorrelationId
from eventshop.services.orders import handlers

router = APIRouter()


class WantedLine(StrictBody):
    sku: str = Field(min_length=1, max_length=64)
    quantity: StrictInt = Field(ge=1, le=100)


class PlaceOrder(StrictBody):
    lines: list[WantedLine] = Field(
        min_length=1, max_length=50, description="one line per sku (a sku twice: 422)"
    )
    #: the payment method chosen at checkout (a provider token), passed on to payments
    payment_token: str = Field(default="tok_visa", min_length=1, max_length=100)

    @field_validator("lines")
    @classmethod
    def one_line_per_sku(cls, lines: list[WantedLine]) -> list[WantedLine]:
        seen: set[str] = set()
        for line in lines:
            if line.sku in seen:
                raise ValueError(f"sku {line.sku!r} appears in more than one line")
            seen.add(line.sku)
        return lines


class OrderAccepted(BaseModel):
    order_id: str
    status: str


class OrderLine(BaseModel):
    sku: str
    quantity: int
    unit_price_minor: int


class OrderView(BaseModel):
    order_id: str
    user_id: str
    email: str
    status: str
    reason: str | None
    lines: list[OrderLine]
    total_minor: int
    currency: str
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    version: int


class OrderAsOf(BaseModel):
    """An order as it was: its stream folded up to a version or a moment (time travel)."""

    order_id: str
    status: str
    reason: str | None
    lines: list[OrderLine]
    total_minor: int
    currency: str
    placed_at: datetime
    deadline: datetime
    stock_reserved: bool
    payment_id: str | None
    #: the events of its stream this state reflects
    version: int


class HistoryEntry(BaseModel):
    version: int
    event_type: str
    #: the version `data` is in (the current one: old events are upcast on read)
    schema_version: int
    #: the version it was stored in, when it was upcast
    stored_schema_version: int | None = None
    data: dict[str, Any]
    recorded_at: datetime
    correlation_id: str | None
    causation_id: str | None
    #: the order's status right after this event
    status_after: str


#: the longest Idempotency-Key taken (the gateway's own limit too)
IDEMPOTENCY_KEY_MAX = 200


async def idempotency_key_of(request: Request) -> str | None:
    """The Idempotency-Key header, 1 to 200 characters (422 otherwise), or None. Read here, not
    as a `Header()` parameter, which costs FastAPI about 14 µs a request (platform/http.py)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise RequestValidationError(
            [
                {
                    "type": "string_length",
                    "loc": ("header", "idempotency-key"),
                    "msg": f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters",
                    "input": key,
                }
            ]
        )
    return key


@router.post("/orders", status_code=202)
async def place_order(
    ctx: Context,
    body: PlaceOrder,
    who: Caller,
    correlation_id: CorrelationId,
    idempotency_key: Annotated[str | None, Depends(idempotency_key_of)],
) -> OrderAccepted:
    """Accept an order (202 and its id): the saga goes on from events, the caller polls it.
    The same Idempotency-Key and body again, within 24 hours (ADR 0009), answer the same
    order, in its current status."""
    order_id, status = await handlers.place_order(
        ctx,
        who,
        [Line(sku=w.sku, quantity=w.quantity) for w in body.lines],
        payment_token=body.payment_token,
        idempotency_key=idempotency_key,
        fingerprint=_fingerprint(body),
        correlation_id=correlation_id,
    )
    return OrderAccepted(order_id=order_id, status=status)


@router.get("/orders")
async def my_orders(
    ctx: Context, who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[OrderView]:
    return [_view(r) for r in await handlers.orders_of(ctx, who, limit)]


@router.get("/orders/{order_id}")
async def get_order(ctx: Context, order_id: str, who: Caller) -> OrderView:
    return _view(await handlers.order_of(ctx, who, order_id))


@router.get("/orders/{order_id}/as-of")
async def order_as_of(
    ctx: Context,
    order_id: str,
    who: Caller,
    version: Annotated[
        int | None,
        Query(ge=1, le=PG_INT_MAX, description="after its N-th event; exactly one of version, at"),
    ] = None,
    at: Annotated[
        IsoDatetime | None,
        Query(description="as it was at this time (ISO 8601); exactly one of version, at"),
    ] = None,
) -> OrderAsOf:
    """Time travel: the order after its `version`-th event, or as it stood at time `at`
    (ISO 8601, with its offset); 404 if it did not exist yet."""
    if (version is None) == (at is None):
        raise ApiError(
            422,
            "validation_error",
            "give exactly one of version and at",
            [{"field": "version"}, {"field": "at"}],
        )
    if at is not None and at.tzinfo is None:
        raise ApiError(422, "validation_error", "at needs its UTC offset", [{"field": "at"}])
    order = await handlers.order_as_of(ctx, who, order_id, version=version, at=at)
    return OrderAsOf(
        order_id=order.order_id,
        status=order.status.value,
        reason=order.reason,
        lines=[OrderLine(**line.model_dump()) for line in order.lines],
        total_minor=order.total_minor,
        currency=order.currency,
        placed_at=order.placed_at,
        deadline=order.deadline,
        stock_reserved=order.stock_reserved,
        payment_id=order.payment_id,
        version=order.version,
    )


@router.get("/orders/{order_id}/history")
async def order_history(ctx: Context, order_id: str, who: Caller) -> list[HistoryEntry]:
    return [
        HistoryEntry(
            version=step.recorded.version,
            event_type=step.recorded.event_type,
            schema_version=step.recorded.schema_version,
            stored_schema_version=step.recorded.stored_schema_version,
            data=step.recorded.payload,
            recorded_at=step.recorded.recorded_at,
            correlation_id=step.recorded.correlation_id,
            causation_id=step.recorded.causation_id,
            status_after=step.status_after,
        )
        for step in await handlers.history_of(ctx, who, order_id)
    ]


def _fingerprint(body: PlaceOrder) -> str:
    """What makes two requests "the same" for an Idempotency-Key: the body, field for field."""
    return hashlib.sha256(orjson.dumps(body.model_dump(mode="json"))).hexdigest()


def _view(row: Any) -> OrderView:
    fields = dict(row)
    fields["lines"] = orjson.loads(fields["lines"])
    return OrderView(**fields)
