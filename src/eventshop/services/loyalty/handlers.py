"""loyalty's use cases: every event it handles and every command or query HTTP calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts import EventPayload
from eventshop.contracts.loyalty import PointsAwarded
from eventshop.contracts.orders import OrderConfirmed
from eventshop.platform.bus import Delivery
from eventshop.services.loyalty import domain, store

if TYPE_CHECKING:
    from eventshop.services.loyalty.service import Context


async def award_points(ctx: Context, deliveries: Sequence[Delivery]) -> None:
    """Points for confirmed orders, a window's at once (ADR 0016): the awards and the balances
    in two statements. An order already awarded gets nothing (the inbox dedupes deliveries;
    this guards a re-published order)."""
    conn = deliveries[0][0].conn
    awards: dict[str, tuple[str, str, int]] = {}
    for _, _, event in deliveries:
        awards.setdefault(
            event.order_id,
            (event.order_id, event.user_id, domain.points_for(event.total_minor)),
        )
    balance_after = await store.record_awards(conn, list(awards.values()))
    for uow, _, event in deliveries:
        balance = balance_after.pop(event.order_id, None)  # the same order twice: once
        if balance is None:
            continue
        _, user_id, points = awards[event.order_id]
        uow.emit(
            PointsAwarded(user_id=user_id, order_id=event.order_id, points=points, balance=balance),
            aggregate_id=user_id,
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
