"""Two replicas of inventory, each handling a window of two orders in one transaction, over the
same two skus in opposite orders (real PostgreSQL): with the window's stock rows locked first in
sku order (`lock_first`, ADR 0011) both commit; without it, PostgreSQL finds the deadlock the
compose platform's three inventory containers kept hitting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from eventshop.contracts import EventPayload
from eventshop.contracts.orders import OrderCreated
from eventshop.services.inventory import handlers, store
from eventshop.services.inventory.service import definition
from tests.integration.services.test_inventory import cancelled, confirmed, created

SERVICE = "inventory"
MIGRATIONS = "eventshop.services.inventory.migrations"


async def window(pool: asyncpg.Pool, payloads: Sequence[EventPayload], *, first: bool) -> None:
    """What WindowRunner does with a window: one transaction, the locks first (or not), then
    each event's own locks, in the window's order (slowly, so the two windows interleave)."""
    async with pool.acquire() as conn, conn.transaction():
        if first:
            await handlers.lock_window(conn, payloads)
        for p in payloads:
            assert isinstance(p, OrderCreated)
            await store.lock_stock(conn, sorted(line.sku for line in p.lines))
            await asyncio.sleep(0.3)


async def stocked(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for sku in ("SKU-A", "SKU-B"):
            await store.add_stock_item(conn, sku)


def windows() -> tuple[list[EventPayload], list[EventPayload]]:
    one = [created("o1", ("SKU-A", 1)), created("o2", ("SKU-B", 1))]
    other = [created("o3", ("SKU-B", 1)), created("o4", ("SKU-A", 1))]
    return list(one), list(other)


async def test_windows_of_two_replicas_lock_in_one_order_and_never_deadlock(
    pool: asyncpg.Pool,
) -> None:
    await stocked(pool)
    one, other = windows()
    await asyncio.gather(window(pool, one, first=True), window(pool, other, first=True))
    assert definition.lock_first is handlers.lock_window  # what the runtime gives the window


async def test_without_it_the_same_windows_deadlock(pool: asyncpg.Pool) -> None:
    await stocked(pool)
    one, other = windows()
    results = await asyncio.gather(
        window(pool, one, first=False), window(pool, other, first=False), return_exceptions=True
    )
    assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results


@pytest.mark.parametrize(
    "payload",
    [
        created("o9", ("SKU-B", 1), ("SKU-A", 2)),
        cancelled("o9", ("SKU-B", 1), ("SKU-A", 2)),
        confirmed("o9", ("SKU-B", 1), ("SKU-A", 2)),
    ],
    ids=["created", "cancelled", "confirmed"],
)
async def test_every_event_that_moves_stock_has_its_rows_locked_first(
    pool: asyncpg.Pool, payload: EventPayload
) -> None:
    await stocked(pool)
    async with pool.acquire() as holder, holder.transaction():
        await handlers.lock_window(holder, [payload])
        async with pool.acquire() as other:
            for sku in ("SKU-A", "SKU-B"):
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await other.execute("SELECT 1 FROM stock WHERE sku = $1 FOR UPDATE NOWAIT", sku)
