"""loyalty's tables: awards (one per order) and balances."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def record_award(
    conn: asyncpg.Connection, order_id: str, user_id: str, points: int
) -> int | None:
    """Record the award of an order and credit it; the balance after it, None if that order
    was already awarded."""
    return (await record_awards(conn, [(order_id, user_id, points)])).get(order_id)


async def record_awards(
    conn: asyncpg.Connection, awards: Sequence[tuple[str, str, int]]
) -> dict[str, int]:
    """`record_award` for several (order_id, user_id, points) at once, in two statements: the
    awards not yet recorded, and each user's balance credited with their sum. Returns each
    recorded order's balance right after its award, as one award at a time would leave it."""
    if not awards:
        return {}
    rows = await conn.fetch(
        "INSERT INTO awards (order_id, user_id, points)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::int[])"
        " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        [a[0] for a in awards],
        [a[1] for a in awards],
        [a[2] for a in awards],
    )
    new = {r["order_id"] for r in rows}
    recorded = [a for a in awards if a[0] in new]
    credit: dict[str, int] = {}
    for _, user_id, points in recorded:
        credit[user_id] = credit.get(user_id, 0) + points
    users = sorted(credit)
    balances = await conn.fetch(
        "INSERT INTO balances (user_id, points)"
        " SELECT * FROM unnest($1::text[], $2::int[]) ORDER BY 1"
        " ON CONFLICT (user_id) DO UPDATE SET points = balances.points + EXCLUDED.points"
        " RETURNING user_id, points",
        users,
        [credit[u] for u in users],
    )
    # each award's balance: the balance now, less what the user's later awards here added
    left = {r["user_id"]: int(r["points"]) - credit[r["user_id"]] for r in balances}
    after: dict[str, int] = {}
    for order_id, user_id, points in recorded:
        left[user_id] += points
        after[order_id] = left[user_id]
    return after


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
