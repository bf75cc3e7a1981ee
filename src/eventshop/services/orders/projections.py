"""orders' projections: read models fed from the orders event log by catch-up subscriptions.

    orders_by_user   each order with its user, status, total and item count: "my orders" and
                     "orders of a user by status" without touching the streams
    sales_per_sku    per sku and currency: confirmed orders, units and revenue, cancelled units
                     (with `sales_open_orders`, the lines of orders not final yet)

The orders service runs them in the background (service.py); `eventshop events rebuild` drops
and rebuilds one from position zero while the platform runs (eventshop.platform.eventstore.
projections). They are eventually consistent, unlike the `orders` table, which is written in
the same transaction as each append and which the saga and the API read.

Each batch is folded in Python first and written with a few multi-row statements, so a
rebuild runs at tens of thousands of events a second. Every column comes from the events
(times are `recorded_at`), so a rebuild ends identical to the live tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from eventshop.platform.eventstore import RecordedEvent
from eventshop.platform.eventstore.projections import Projection, Tables, quote
from eventshop.services.orders.domain import (
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    PaymentRequested,
    Status,
)
from eventshop.services.orders.store import order_id_of, to_domain


# -- orders_by_user -------------------------------------------------------------------------------
@dataclass
class OrderRow:
    order_id: str
    user_id: str
    status: str
    reason: str | None
    total_minor: int
    currency: str
    items: int
    placed_at: datetime
    updated_at: datetime
    version: int


@dataclass
class StatusChange:
    status: str
    reason: str | None
    updated_at: datetime
    version: int


def fold_orders_by_user(
    events: Sequence[RecordedEvent],
) -> tuple[dict[str, OrderRow], dict[str, StatusChange]]:
    """A batch as (orders placed in it, in their latest state; status changes of the others)."""
    placed: dict[str, OrderRow] = {}
    changed: dict[str, StatusChange] = {}
    for recorded in events:
        event = to_domain(recorded)
        order_id = order_id_of(recorded.stream_id)
        if isinstance(event, OrderPlaced):
            placed[order_id] = OrderRow(
                order_id=order_id,
                user_id=event.user_id,
                status=Status.PENDING.value,
                reason=None,
                total_minor=event.total_minor,
                currency=event.currency,
                items=sum(line.quantity for line in event.lines),
                placed_at=event.placed_at,
                updated_at=recorded.recorded_at,
                version=recorded.version,
            )
            continue
        reason: str | None = None
        match event:
            case PaymentRequested():
                status = Status.AWAITING_PAYMENT.value
            case OrderConfirmed():
                status = Status.CONFIRMED.value
            case OrderCancelled():
                status, reason = Status.CANCELLED.value, event.reason
            case _:
                continue
        change = StatusChange(status, reason, recorded.recorded_at, recorded.version)
        row = placed.get(order_id)
        if row is None:
            changed[order_id] = change
        else:
            row.status, row.reason = change.status, change.reason
            row.updated_at, row.version = change.updated_at, change.version
    return placed, changed


class OrdersByUser(Projection):
    name = "orders_by_user"
    tables = {
        "orders_by_user": """
            CREATE TABLE IF NOT EXISTS {table} (
                order_id    text        PRIMARY KEY,
                user_id     text        NOT NULL,
                status      text        NOT NULL,
                reason      text,
                total_minor bigint      NOT NULL,
                currency    text        NOT NULL,
                items       int         NOT NULL,
                placed_at   timestamptz NOT NULL,
                updated_at  timestamptz NOT NULL,
                version     int         NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {table}_user ON {table} (user_id, placed_at DESC);
            CREATE INDEX IF NOT EXISTS {table}_status ON {table} (status);
        """,
    }
    event_types = (
        OrderPlaced.type_name(),
        PaymentRequested.type_name(),
        OrderConfirmed.type_name(),
        OrderCancelled.type_name(),
    )

    async def apply(
        self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], tables: Tables
    ) -> None:
        placed, changed = fold_orders_by_user(events)
        table = quote(tables["orders_by_user"])
        if placed:
            rows = list(placed.values())
            await conn.execute(
                f"""
                INSERT INTO {table} (order_id, user_id, status, reason, total_minor, currency,
                                     items, placed_at, updated_at, version)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                     $5::bigint[], $6::text[], $7::int[], $8::timestamptz[],
                                     $9::timestamptz[], $10::int[])
                """,
                [r.order_id for r in rows],
                [r.user_id for r in rows],
                [r.status for r in rows],
                [r.reason for r in rows],
                [r.total_minor for r in rows],
                [r.currency for r in rows],
                [r.items for r in rows],
                [r.placed_at for r in rows],
                [r.updated_at for r in rows],
                [r.version for r in rows],
            )
        if changed:
            await conn.execute(
                f"""
                UPDATE {table} AS o
                   SET status = c.status, reason = c.reason, updated_at = c.updated_at,
                       version = c.version
                  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[])
                       AS c(order_id, status, reason, updated_at, version)
                 WHERE o.order_id = c.order_id
                """,
                list(changed),
                [c.status for c in changed.values()],
                [c.reason for c in changed.values()],
                [c.updated_at for c in changed.values()],
                [c.version for c in changed.values()],
            )


# -- sales_per_sku --------------------------------------------------------------------------------
@dataclass
class SkuSales:
    orders: int = 0
    units: int = 0
    revenue_minor: int = 0
    cancelled_units: int = 0


@dataclass(frozen=True)
class OpenOrder:
    currency: str
    #: (sku, quantity, unit price in minor units)
    lines: tuple[tuple[str, int, int], ...]


def _add(totals: dict[tuple[str, str], SkuSales], order: OpenOrder, *, confirmed: bool) -> None:
    for sku, quantity, unit_price in order.lines:
        sales = totals[(sku, order.currency)]
        if confirmed:
            sales.orders += 1
            sales.units += quantity
            sales.revenue_minor += quantity * unit_price
        else:
            sales.cancelled_units += quantity


class SalesPerSku(Projection):
    name = "sales_per_sku"
    tables = {
        "sales_per_sku": """
            CREATE TABLE IF NOT EXISTS {table} (
                sku             text   NOT NULL,
                currency        text   NOT NULL,
                orders          int    NOT NULL,
                units           bigint NOT NULL,
                revenue_minor   bigint NOT NULL,
                cancelled_units bigint NOT NULL,
                PRIMARY KEY (sku, currency)
            );
        """,
        # the lines of the orders placed and not final yet: what a confirmation will count
        "sales_open_orders": """
            CREATE TABLE IF NOT EXISTS {table} (
                order_id text  PRIMARY KEY,
                currency text  NOT NULL,
                lines    jsonb NOT NULL
            );
        """,
    }
    event_types = (
        OrderPlaced.type_name(),
        OrderConfirmed.type_name(),
        OrderCancelled.type_name(),
    )

    async def apply(
        self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], tables: Tables
    ) -> None:
        opened: dict[str, OpenOrder] = {}
        closed: list[tuple[str, bool]] = []  # (order_id, confirmed), in order
        for recorded in events:
            event = to_domain(recorded)
            order_id = order_id_of(recorded.stream_id)
            match event:
                case OrderPlaced():
                    opened[order_id] = OpenOrder(
                        event.currency,
                        tuple(
                            (li.sku, li.quantity, li.unit_price_minor or 0) for li in event.lines
                        ),
                    )
                case OrderConfirmed() | OrderCancelled():
                    closed.append((order_id, isinstance(event, OrderConfirmed)))
        sales, open_orders = quote(tables["sales_per_sku"]), quote(tables["sales_open_orders"])
        earlier = [order_id for order_id, _ in closed if order_id not in opened]
        known = dict(opened)
        if earlier:
            rows = await conn.fetch(
                f"DELETE FROM {open_orders} WHERE order_id = ANY($1::text[])"
                " RETURNING order_id, currency, lines",
                earlier,
            )
            for r in rows:
                kept = tuple((sku, q, price) for sku, q, price in orjson.loads(r["lines"]))
                known[r["order_id"]] = OpenOrder(r["currency"], kept)
        totals: dict[tuple[str, str], SkuSales] = defaultdict(SkuSales)
        for order_id, confirmed in closed:
            order = known.pop(order_id, None)
            opened.pop(order_id, None)
            if order is not None:  # a second final event of one order counts nothing
                _add(totals, order, confirmed=confirmed)
        if opened:
            await conn.execute(
                f"INSERT INTO {open_orders} (order_id, currency, lines)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
                list(opened),
                [o.currency for o in opened.values()],
                [orjson.dumps(o.lines).decode() for o in opened.values()],
            )
        if totals:
            keys = sorted(totals)  # a fixed order: two writers never deadlock on the rows
            await conn.execute(
                f"""
                INSERT INTO {sales} AS s (sku, currency, orders, units, revenue_minor,
                                          cancelled_units)
                SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[],
                                     $5::bigint[], $6::bigint[])
                ON CONFLICT (sku, currency) DO UPDATE
                   SET orders = s.orders + EXCLUDED.orders,
                       units = s.units + EXCLUDED.units,
                       revenue_minor = s.revenue_minor + EXCLUDED.revenue_minor,
                       cancelled_units = s.cancelled_units + EXCLUDED.cancelled_units
                """,
                [sku for sku, _ in keys],
                [currency for _, currency in keys],
                [totals[k].orders for k in keys],
                [totals[k].units for k in keys],
                [totals[k].revenue_minor for k in keys],
                [totals[k].cancelled_units for k in keys],
            )


#: what the orders service runs, and what `eventshop events rebuild` can rebuild
PROJECTIONS: tuple[Projection, ...] = (OrdersByUser(), SalesPerSku())


def projection_named(name: str) -> Projection:
    for projection in PROJECTIONS:
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in PROJECTIONS)
    raise LookupError(f"no projection {name!r} (orders has: {known})")
