"""Event sourcing end to end: after a run of a few hundred orders through the running platform,
each of orders' projections rebuilt from position zero equals the live one, and every order
replayed from its stream equals its read model.

What is real: everything (the platform of tests/e2e/running_platform.py, orders' projections
running in the orders process). The orders come in over the gateway's HTTP API; the checks
read the orders schema directly and rebuild there while the platform runs, as an operator's
`eventshop events rebuild` / `eventshop events check` do.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import asyncpg
import pytest

from eventshop.platform.db import create_pool
from eventshop.platform.eventstore.projections import positions
from eventshop.platform.eventstore.rebuild import rebuild
from eventshop.platform.settings import PlatformSettings
from eventshop.services.orders import projections, store
from tests.support.polling import eventually
from tests.support.shop import Shop, User

pytestmark = pytest.mark.e2e

ORDERS = 300
IN_FLIGHT = 16


async def test_rebuilt_projections_and_replayed_orders_match_the_live_ones(shop: Shop) -> None:
    rng = random.Random(5)
    plenty = [await shop.product(stock=10_000, price_minor=p) for p in (300, 1_250, 4_990)]
    scarce = await shop.product(stock=4, price_minor=700)
    # 30 shoppers, 10 orders each: under the fraud rules' velocity limit (20 a minute)
    users = list(await asyncio.gather(*(shop.register() for _ in range(29))))
    users.append(await shop.register(domain="fraud.test"))
    plans: list[tuple[User, list[tuple[str, int]], str]] = []
    for i in range(ORDERS):
        lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(plenty, rng.randint(1, 3))]
        if i % 20 == 0:
            lines.append((scarce, 2))  # the first two get it, the rest are out of stock
        plans.append((users[i % 30], lines, "tok_decline" if i % 9 == 0 else "tok_visa"))

    sem = asyncio.Semaphore(IN_FLIGHT)

    async def place(user: User, lines: list[tuple[str, int]], token: str) -> str:
        async with sem:
            return await shop.place(user, lines, token=token)

    async def final(user: User, order_id: str) -> dict[str, Any]:
        async with sem:
            return await shop.final(user, order_id, timeout=90)

    placed = await asyncio.gather(*(place(*p) for p in plans))
    finals = await asyncio.gather(*(final(p[0], oid) for p, oid in zip(plans, placed, strict=True)))
    outcomes = Counter((o["status"], o["reason"]) for o in finals)
    assert outcomes[("CONFIRMED", None)] > ORDERS // 2, outcomes
    for cancelled in (("CANCELLED", "payment_declined"), ("CANCELLED", "fraud")):
        assert outcomes[cancelled] > 0, outcomes
    assert outcomes[("CANCELLED", "out_of_stock")] > 0, outcomes

    pool = await create_pool(PlatformSettings().database_url, "orders", max_size=4)
    try:
        await _the_live_projections_catch_up(pool)
        await _orders_by_user_agrees_with_the_read_model(pool, list(placed))
        for projection in projections.PROJECTIONS:
            report = await rebuild(pool, store.events, projection)
            # compared row for row with the live tables at one position, then swapped in
            assert (report.differences, report.swapped) == (0, True), report
            assert report.events >= ORDERS * 2, report  # this run's events and all before
        async with pool.acquire() as conn:
            assert await store.read_model_differences(conn, list(placed)) == {}
        await _orders_by_user_agrees_with_the_read_model(pool, list(placed))
    finally:
        await pool.close()


async def _the_live_projections_catch_up(pool: asyncpg.Pool) -> None:
    """The orders service's live subscriptions pass, by themselves, the head of the log as it
    was once this run's orders were final (other runs may be appending meanwhile)."""
    async with pool.acquire() as conn:
        head = await store.events.head(conn)

    async def behind() -> dict[str, int]:
        async with pool.acquire() as conn:
            where = await positions(conn)
        return {p.name: max(0, head - where.get(p.name, 0)) for p in projections.PROJECTIONS}

    await eventually(behind, lambda lag: max(lag.values()) == 0, timeout=60, interval=0.2)


async def _orders_by_user_agrees_with_the_read_model(
    pool: asyncpg.Pool, order_ids: list[str]
) -> None:
    rows = await pool.fetch(
        "SELECT o.order_id, o.user_id, o.status, o.reason, o.total_minor, o.version,"
        " p.user_id AS p_user_id, p.status AS p_status, p.reason AS p_reason,"
        " p.total_minor AS p_total_minor, p.version AS p_version"
        " FROM orders o LEFT JOIN orders_by_user p USING (order_id)"
        " WHERE o.order_id = ANY($1::text[])",
        order_ids,
    )
    assert len(rows) == len(order_ids)
    for r in rows:
        for field in ("user_id", "status", "reason", "total_minor", "version"):
            assert r[field] == r[f"p_{field}"], (field, dict(r))
