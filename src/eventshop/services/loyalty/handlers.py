"""loyalty's use cases: every event it handles and every command or query HTTP calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts import Envelope, EventPayload
from eventshop.contracts.loyalty import PointsAwarded
from eventshop.contracts.orders import OrderConfirmed
from eventshop.platform.bus import UnitOfWork
from eventshop.services.loyalty import domain, store

if TYPE_CHECKING:
    from eventshop.services.loyalty.service import Context


async def award_points(ctx: Context, uow: UnitOfWork, env: Envelope, event: OrderConfirmed) -> None:
    points = domain.points_for(event.total_minor)
    balance = await store.record_award(uow.conn, event.order_id, event.user_id, points)
    if balance is None:
        return  # already awarded (the inbox dedupes deliveries; this guards a re-published order)
    uow.emit(
        PointsAwarded(
            user_id=event.user_id, order_id=event.order_id, points=points, balance=balance
        ),
        aggregate_id=event.user_id,
    )


async def lock_window(conn: asyncpg.Connection, payloads: Sequence[EventPayload]) -> None:
    """The balances a window will credit, locked first and in user order (ADR 0012): two
    replicas' windows awarding points to the same two users in opposite orders would otherwise
    each hold one balance and wait for the other."""
    await store.lock_balances(conn, [p.user_id for p in payloads if isinstance(p, OrderConfirmed)])


async def points_of(ctx: Context, user_id: str) -> tuple[int, list[asyncpg.Record]]:
    """A customer's balance and their latest awards, newest first."""
    async with ctx.pool.acquire() as conn:
        return await store.balance_of(conn, user_id)
