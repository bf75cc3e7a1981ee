"""orders' internal HTTP routes (behind the gateway).

POST /orders prices the lines from the local price list and, in one transaction, starts the
order's stream, writes its read model, puts order.created in the outbox and records the
Idempotency-Key: the saga goes on from events, and the caller polls GET /orders/{id}.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Query, Request
from pydantic import BaseModel, Field, field_validator

from eventshop.contracts.common import Line
from eventshop.platform.http import (
    ApiError,
    Caller,
    Identity,
    StrictBody,
    correlation_id_of,
    install_conventions,
    not_found,
)
from eventshop.platform.runtime import ServiceContext
from eventshop.platform.uow import UnitOfWork
from eventshop.services.orders import domain, store
from eventshop.services.orders.settings import OrdersSettings


class WantedLine(StrictBody):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)


class PlaceOrder(StrictBody):
    lines: list[WantedLine] = Field(min_length=1, max_length=50)
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
    status: str = domain.Status.PENDING.value


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


def build_app(ctx: ServiceContext, settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    app = FastAPI(title="orders")
    install_conventions(app)

    @app.post("/orders", status_code=202)
    async def place_order(
        body: PlaceOrder,
        request: Request,
        who: Caller,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> OrderAccepted:
        order_id = str(uuid.uuid4())
        async with UnitOfWork.begin(
            ctx.pool, service=ctx.name, correlation_id=correlation_id_of(request)
        ) as uow:
            if idempotency_key is not None:
                fingerprint = _fingerprint(body)
                earlier = await store.claim_idempotency_key(
                    uow.conn, who.user_id, idempotency_key, order_id, fingerprint
                )
                if earlier is not None:
                    if earlier.request_hash != fingerprint:
                        raise ApiError(
                            422,
                            "idempotency_key_reused",
                            "this Idempotency-Key was already used with a different request",
                        )
                    return OrderAccepted(order_id=earlier.order_id)
            wanted = [Line(sku=w.sku, quantity=w.quantity) for w in body.lines]
            prices = await store.prices_of(uow.conn, [w.sku for w in wanted])
            try:
                decision = domain.place(
                    order_id=order_id,
                    user_id=who.user_id,
                    email=who.email,
                    wanted=wanted,
                    prices=prices,
                    payment_token=body.payment_token,
                    now=datetime.now(UTC),
                    timeout=settings.timeout,
                )
            except domain.UnknownSkuError as exc:
                raise ApiError(
                    422, "unknown_sku", str(exc), [{"field": "lines", "skus": list(exc.skus)}]
                ) from None
            except domain.OrderRejectedError as exc:
                raise ApiError(422, "order_rejected", str(exc)) from None
            await store.record_new_order(uow.conn, decision, correlation_id=uow.correlation_id)
            for outgoing in decision.emit:
                uow.emit(outgoing, aggregate_id=order_id)
        return OrderAccepted(order_id=order_id)

    @app.get("/orders")
    async def my_orders(
        who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> list[OrderView]:
        async with ctx.pool.acquire() as conn:
            rows = await store.orders_of(conn, who.user_id, limit)
        return [_view(r) for r in rows]

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, who: Caller) -> OrderView:
        async with ctx.pool.acquire() as conn:
            row = await store.get_order(conn, order_id)
        if row is None or not _may_see(who, row["user_id"]):
            raise not_found("order")
        return _view(row)

    @app.get("/orders/{order_id}/as-of")
    async def order_as_of(
        order_id: str,
        who: Caller,
        version: Annotated[int | None, Query(ge=1)] = None,
        at: Annotated[datetime | None, Query()] = None,
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
        async with ctx.pool.acquire() as conn:
            owner = await store.owner_of(conn, order_id)
            if owner is None or not _may_see(who, owner):
                raise not_found("order")
            order = await store.order_as_of(conn, order_id, version=version, at=at)
        if order is None:
            raise not_found("order at that point")
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

    @app.get("/orders/{order_id}/history")
    async def order_history(order_id: str, who: Caller) -> list[HistoryEntry]:
        async with ctx.pool.acquire() as conn:
            owner = await store.owner_of(conn, order_id)
            if owner is None or not _may_see(who, owner):
                raise not_found("order")
            recorded = await store.history_of(conn, order_id)
        steps = domain.timeline(store.to_domain(r) for r in recorded)
        return [
            HistoryEntry(
                version=r.version,
                event_type=r.event_type,
                schema_version=r.schema_version,
                stored_schema_version=r.stored_schema_version,
                data=r.payload,
                recorded_at=r.recorded_at,
                correlation_id=r.correlation_id,
                causation_id=r.causation_id,
                status_after=state.status.value,
            )
            for r, (_, state) in zip(recorded, steps, strict=True)
        ]

    return app


def _may_see(who: Identity, owner: str) -> bool:
    return who.is_admin or who.user_id == owner


def _fingerprint(body: PlaceOrder) -> str:
    """What makes two requests "the same" for an Idempotency-Key: the body, field for field."""
    return hashlib.sha256(orjson.dumps(body.model_dump(mode="json"))).hexdigest()


def _view(row: Any) -> OrderView:
    fields = dict(row)
    fields["lines"] = orjson.loads(fields["lines"])
    return OrderView(**fields)
