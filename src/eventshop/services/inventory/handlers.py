"""inventory's use cases: every event it handles (event -> domain decision -> stock moves and
events, one transaction), the restock HTTP calls and the stock levels it reads.

Locks are always taken in one order, the order's reservation row first and then its stock rows
in sku order, so handlers running concurrently for the same order or the same skus queue up
rather than deadlock. A business "no" (not enough stock, an unknown sku) is an event, never an
exception: exceptions are for faults a retry may fix.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from eventshop.contracts import Envelope, EventPayload
from eventshop.contracts.catalog import ProductCreated
from eventshop.contracts.common import Line
from eventshop.contracts.inventory import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    StockAdjusted,
)
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed, OrderCreated
from eventshop.platform.bus import Delivery, UnitOfWork
from eventshop.platform.http import not_found
from eventshop.platform.observability.logging import get_logger
from eventshop.services.inventory import domain, store
from eventshop.services.inventory.domain import Effect, ReservationStatus, StockLevel

if TYPE_CHECKING:
    from eventshop.services.inventory.service import Context

log = get_logger(__name__)


def _stored(lines: Iterable[Line]) -> list[dict[str, Any]]:
    return [line.model_dump(mode="json") for line in lines]


def _wanted(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    return domain.quantities_by_sku((line["sku"], int(line["quantity"])) for line in lines)


async def add_stock_item(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: ProductCreated
) -> None:
    """A new product: track its sku with nothing in stock (a restock adds units)."""
    await store.add_stock_item(uow.conn, event.sku)


async def move_stock(ctx: Context, deliveries: Sequence[Delivery]) -> None:
    """order.created and order.confirmed, a window's run of them at once (ADR 0016)."""
    await move_stock_of(deliveries[0][0].conn, [(uow, event) for uow, _, event in deliveries])


async def move_stock_of(
    conn: asyncpg.Connection, steps: Sequence[tuple[UnitOfWork, OrderCreated | OrderConfirmed]]
) -> None:
    """Reserve every line of each created order or none of them; sell a confirmed order's
    reserved units. In the order given, each on the stock the ones before it left, in five
    statements whatever the number of events: claim the new orders' reservations, lock the
    confirmed ones', lock the stock, move it, set the reservations' statuses."""
    created: dict[str, list[dict[str, Any]]] = {}
    for _, event in steps:
        if isinstance(event, OrderCreated):
            created.setdefault(event.order_id, _stored(event.lines))
    # a created order's row, as `rejected` until its stock is proven to be there; an order
    # already known is a duplicate or a late order.created, and reserves nothing
    claimed = await store.claim_orders(conn, list(created.items()))
    confirmed = [e.order_id for _, e in steps if isinstance(e, OrderConfirmed)]
    reservations = await store.reservations_for_update(conn, confirmed) if confirmed else {}
    skus = {sku for o in claimed for sku in _wanted(created[o])} | {
        sku for r in reservations.values() for sku in _wanted(r.lines)
    }
    on_hand = await store.lock_stock(conn, sorted(skus)) if skus else {}
    moves: dict[str, collections.Counter[str]] = {
        k: collections.Counter() for k in ("on_hand", "reserved", "sold")
    }
    statuses: dict[str, ReservationStatus] = {}
    for uow, event in steps:
        order_id = event.order_id
        if isinstance(event, OrderCreated):
            if order_id not in claimed:
                continue
            claimed.discard(order_id)  # the same order twice in a window reserves once
            wanted = _wanted(created[order_id])
            decision = domain.decide_reservation(
                {sku: on_hand[sku] for sku in wanted if sku in on_hand}, wanted
            )
            if isinstance(decision, domain.Reject):  # the claimed row already says so
                reservations[order_id] = store.Reservation(
                    order_id, ReservationStatus.REJECTED, created[order_id]
                )
                uow.emit(
                    InventoryRejected(
                        order_id=order_id, reason=decision.reason, skus=decision.skus
                    ),
                    aggregate_id=order_id,
                )
                continue
            for sku, quantity in decision.quantities.items():
                on_hand[sku] -= quantity
                moves["on_hand"][sku] -= quantity
                moves["reserved"][sku] += quantity
            statuses[order_id] = ReservationStatus.RESERVED
            reservations[order_id] = store.Reservation(
                order_id, ReservationStatus.RESERVED, created[order_id]
            )
            uow.emit(InventoryReserved(order_id=order_id, lines=event.lines), aggregate_id=order_id)
            continue
        reservation = reservations.get(order_id)
        status = reservation.status if reservation else None
        if reservation is None or domain.on_order_confirmed(status) is not Effect.COMMIT:
            if status is not ReservationStatus.COMMITTED:  # a duplicate is normal; this is not
                log.warning(
                    "inventory.confirmed_without_reservation", order_id=order_id, status=str(status)
                )
            continue
        for sku, quantity in _wanted(reservation.lines).items():
            moves["reserved"][sku] -= quantity
            moves["sold"][sku] += quantity
        statuses[order_id] = ReservationStatus.COMMITTED
        reservations[order_id] = dataclasses.replace(
            reservation, status=ReservationStatus.COMMITTED
        )
    await store.move_many(conn, moves["on_hand"], moves["reserved"], moves["sold"])
    await store.set_reservation_statuses(conn, statuses)


async def release_stock(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: OrderCancelled
) -> None:
    """Give a cancelled order's units back; if its order.created is yet to come, make sure it
    reserves nothing when it does."""
    reservation = await store.reservation_for_update(uow.conn, event.order_id)
    effect = domain.on_order_cancelled(reservation.status if reservation else None)
    if effect is Effect.TOMBSTONE:
        if await store.add_tombstone(uow.conn, event.order_id, _stored(event.lines)):
            return
        # an order.created committed its reservation while the insert waited: act on that
        reservation = await store.reservation_for_update(uow.conn, event.order_id)
        assert reservation is not None
        effect = domain.on_order_cancelled(reservation.status)
    if effect is not Effect.RELEASE:
        return  # released, committed, rejected or a tombstone already: nothing held
    assert reservation is not None
    # release what this service reserved, whatever the cancel event says it holds
    wanted = _wanted(reservation.lines)
    await store.lock_stock(uow.conn, sorted(wanted))
    await store.release(uow.conn, wanted)
    await store.set_reservation_status(uow.conn, event.order_id, ReservationStatus.RELEASED)
    uow.emit(
        InventoryReleased(
            order_id=event.order_id,
            lines=tuple(Line.model_validate(line) for line in reservation.lines),
        ),
        aggregate_id=event.order_id,
    )


# -- commands and queries (HTTP) ------------------------------------------------------------------
async def restock(ctx: Context, correlation_id: str, sku: str, quantity: int) -> StockLevel:
    """Add units on hand and say so (stock.adjusted). A sku inventory has not heard of (no
    product.created yet) is a 404: stock for a product that does not exist could never be sold."""
    async with ctx.unit_of_work(correlation_id) as uow:
        level = await store.restock(uow.conn, sku, quantity)
        if level is None:
            raise not_found(f"stock of {sku}")
        uow.emit(
            StockAdjusted(sku=sku, delta=quantity, on_hand=level.on_hand, reason="restock"),
            aggregate_id=sku,
        )
    return level


async def stock_of(ctx: Context, sku: str) -> StockLevel:
    """A sku's stock level; 404 if inventory has not heard of it."""
    async with ctx.pool.acquire() as conn:
        level = await store.stock_level(conn, sku)
    if level is None:
        raise not_found(f"stock of {sku}")
    return level


async def stock_levels(ctx: Context, *, limit: int, offset: int) -> tuple[list[StockLevel], int]:
    """One page of stock levels in sku order, and how many skus there are."""
    async with ctx.pool.acquire() as conn:
        return await store.stock_levels(conn, limit=limit, offset=offset)


async def lock_window(conn: asyncpg.Connection, payloads: Sequence[EventPayload]) -> None:
    """The window's stock rows, locked first and in sku order (ADR 0011): the orders' lines
    say which skus each event moves."""
    skus = [
        line.sku
        for p in payloads
        if isinstance(p, OrderCreated | OrderCancelled | OrderConfirmed)
        for line in p.lines
    ]
    await store.lock_stock_of_window(conn, skus)
