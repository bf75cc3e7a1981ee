"""loyalty's tables: awards (one per order) and balances."""

from __future__ import annotations

import asyncpg


async def record_award(
    conn: asyncpg.Connection, order_id: str, user_id: str, points: int
) -> int | None:
    """Record the award of an order and credit it; None if that order was already awarded."""
    inserted = await conn.fetchval(
        "INSERT INTO awards (order_id, user_id, points) VALUES ($1, $2, $3)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING points",
        order_id,
        user_id,
        points,
    )
    if inserted is None:
        return None
    balance: int = await conn.fetchval(
        "INSERT INTO balances (user_id, points) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET points = balances.points + EXCLUDED.points"
        " RETURNING points",
        user_id,
        points,
    )
    return balance


async def lock_balances(conn: asyncpg.Connection, user_ids: list[str]) -> None:
    """Lock the balances of `user_ids` in user order, making the missing ones (at 0 points,
    which reads as no balance), so that every window takes its users' rows in one order
    (ADR 0012). The inserts go in that order too: a user new to two windows at once is
    waited for by the second, never in a cycle."""
    users = sorted(set(user_ids))
    await conn.execute(
        "INSERT INTO balances (user_id, points) SELECT u, 0 FROM unnest($1::text[]) AS u"
        " ORDER BY u ON CONFLICT (user_id) DO NOTHING",
        users,
    )
    await conn.execute(
        "SELECT 1 FROM balances WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE",
        users,
    )


async def balance_of(conn: asyncpg.Connection, user_id: str) -> tuple[int, list[asyncpg.Record]]:
    points = await conn.fetchval("SELECT points FROM balances WHERE user_id = $1", user_id) or 0
    history = await conn.fetch(
        "SELECT order_id, points, awarded_at FROM awards WHERE user_id = $1"
        " ORDER BY awarded_at DESC LIMIT 100",
        user_id,
    )
    return int(points), list(history)
