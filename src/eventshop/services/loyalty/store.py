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


async def balance_of(conn: asyncpg.Connection, user_id: str) -> tuple[int, list[asyncpg.Record]]:
    points = await conn.fetchval("SELECT points FROM balances WHERE user_id = $1", user_id) or 0
    history = await conn.fetch(
        "SELECT order_id, points, awarded_at FROM awards WHERE user_id = $1"
        " ORDER BY awarded_at DESC LIMIT 100",
        user_id,
    )
    return int(points), list(history)
