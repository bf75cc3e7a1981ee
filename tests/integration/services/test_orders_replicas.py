"""Two replicas of orders, each handling a window of two events in one transaction (real
PostgreSQL; the service's own handlers), over the same two price rows, or the same two orders,
in opposite orders. Every saga step appends to the event store, which takes the event log's one
counter row until the commit: a window holding the counter and waiting for an order that
another window holds, while that one waits for the counter, is a cycle. With the window's
prices and orders locked first, in one order (`lock_first`, ADR 0012), both windows commit and
the saga's guards settle which event counts; without it, PostgreSQL finds a deadlock."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from eventshop.contracts import EventPayload
from eventshop.contracts.catalog import ProductUpdated
from eventshop.contracts.inventory import InventoryRejected
from eventshop.services.orders import handlers
from eventshop.services.orders.service import definition
from tests.integration.services import test_orders as orders_tests
from tests.integration.services.test_orders import (
    customer,
    orders_context,
    place,
    read_model,
    reserved,
    stream_types,
)
from tests.support.services import handle_window, statements_run

pytestmark = pytest.mark.integration

# orders' schema and that module's HTTP clients on orders' app (its prices seeded)
SERVICE = orders_tests.SERVICE
MIGRATIONS = orders_tests.MIGRATIONS
make_client = orders_tests.make_client
client = orders_tests.client


def price(sku: str, minor: int) -> ProductUpdated:
    return ProductUpdated(sku=sku, name=sku.title(), price_minor=minor, currency="EUR")


def rejected(order_id: str) -> InventoryRejected:
    return InventoryRejected(order_id=order_id, reason="out_of_stock", skus=("MUG",))


async def two_orders(client: httpx.AsyncClient) -> tuple[str, str]:
    who = customer()
    return await place(client, who), await place(client, who)


async def race(
    pool: asyncpg.Pool, one: list[EventPayload], other: list[EventPayload], *, first: bool
) -> list[BaseException | None]:
    ctx = orders_context(pool)
    return list(
        await asyncio.gather(
            handle_window(ctx, one, first=first),
            handle_window(ctx, other, first=first),
            return_exceptions=True,
        )
    )


async def test_windows_over_the_same_orders_lock_them_first_and_never_deadlock(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    x, y = await two_orders(client)
    results = await race(pool, [reserved(x), reserved(y)], [rejected(y), rejected(x)], first=True)
    assert results == [None, None]
    # whichever window went first decided each order; the other's event was out of place and
    # recorded nothing: one step per order, read model and stream agreeing
    for order in (x, y):
        status, stream = (await read_model(pool, order))["status"], await stream_types(pool, order)
        facts = [t for t in stream if t in ("StockReserved", "StockRejected")]
        assert (status, facts) in [
            ("AWAITING_PAYMENT", ["StockReserved"]),
            ("CANCELLED", ["StockRejected"]),
        ], stream
    assert definition.lock_first is handlers.lock_window  # what the runtime gives the window


async def test_without_it_windows_over_the_same_orders_deadlock(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    x, y = await two_orders(client)
    results = await race(pool, [reserved(x), reserved(y)], [rejected(y), rejected(x)], first=False)
    assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results


@pytest.mark.parametrize("skus", [("MUG", "TEE"), ("NEW-1", "NEW-2")], ids=["kept", "new"])
async def test_windows_over_the_same_prices_lock_them_first(
    client: httpx.AsyncClient, pool: asyncpg.Pool, skus: tuple[str, str]
) -> None:
    a, b = skus
    one: list[EventPayload] = [price(a, 1_300), price(b, 2_100)]
    other: list[EventPayload] = [price(b, 2_200), price(a, 1_400)]
    assert await race(pool, one, other, first=True) == [None, None]


@pytest.mark.parametrize("skus", [("MUG", "TEE"), ("NEW-3", "NEW-4")], ids=["kept", "new"])
async def test_without_it_windows_over_the_same_prices_deadlock(
    client: httpx.AsyncClient, pool: asyncpg.Pool, skus: tuple[str, str]
) -> None:
    a, b = skus
    one: list[EventPayload] = [price(a, 1_300), price(b, 2_100)]
    other: list[EventPayload] = [price(b, 2_200), price(a, 1_400)]
    results = await race(pool, one, other, first=False)
    assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results


async def statements_of_lock_window(pool: asyncpg.Pool, payloads: list[EventPayload]) -> list[str]:
    """What the hook sent PostgreSQL for a window of `payloads`, in order."""
    async with pool.acquire() as conn, conn.transaction():
        with statements_run(conn) as ran:
            await handlers.lock_window(conn, payloads)
    return ran


async def test_a_window_of_one_kind_sends_only_its_own_lock(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Saga steps only (the common window below saturation): the orders' rows, and no price
    lock over an empty list, a round trip for nothing; prices only: no orders' statement."""
    x, y = await two_orders(client)
    saga = await statements_of_lock_window(pool, [reserved(x), rejected(y)])
    assert len(saga) == 1 and "FOR UPDATE" in saga[0] and "advisory" not in saga[0], saga
    prices = await statements_of_lock_window(pool, [price("MUG", 1_300)])
    assert len(prices) == 1 and "pg_advisory_xact_lock" in prices[0], prices
    both = await statements_of_lock_window(pool, [price("MUG", 1_300), reserved(x)])
    assert len(both) == 2 and "pg_advisory_xact_lock" in both[0], both
