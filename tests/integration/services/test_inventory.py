"""inventory against the real PostgreSQL: its handlers, its routes, its invariants under races.

Real: PostgreSQL (a random schema per test, migrated). Handlers run as the bus runs them
(`deliver`: the service's own handler table, bound to its context, each event in a transaction
of its own); routes go through httpx's ASGI transport. The bus node in the context is never
started (the routes only write the outbox).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import asyncpg
import httpx
import pytest

from eventshop.contracts import EventPayload, new_envelope, registry
from eventshop.contracts.catalog import ProductCreated
from eventshop.contracts.common import Line
from eventshop.contracts.inventory import StockAdjusted
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed, OrderCreated
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.db import create_pool
from eventshop.platform.service import AnyContext
from eventshop.platform.settings import PlatformSettings
from eventshop.services.inventory import store
from eventshop.services.inventory.service import definition
from tests.support import services

pytestmark = pytest.mark.integration

SERVICE = "inventory"
MIGRATIONS = "eventshop.services.inventory.migrations"
ADMIN = {"X-User-Id": "admin-1", "X-User-Role": "admin"}
CUSTOMER = {"X-User-Id": "user-1", "X-User-Role": "customer"}


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
async def wide_pool(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> AsyncIterator[asyncpg.Pool]:
    """Ten connections on the same schema, for handlers racing in their own transactions."""
    wide = await create_pool(settings.database_url, schema_pool[0], max_size=10)
    yield wide
    await wide.close()


@pytest.fixture
def wide(context: AnyContext, wide_pool: asyncpg.Pool) -> AnyContext:
    """The service's context over the ten connections of `wide_pool`."""
    return replace(context, pool=wide_pool)


async def deliver(ctx: AnyContext, event: EventPayload) -> None:
    """Run the event's handler in its own transaction, under a fresh event id (as a
    re-published business fact would arrive: the inbox would not stop it)."""
    aggregate = str(getattr(event, "order_id", None) or getattr(event, "sku", "x"))
    await services.deliver(ctx, event, aggregate_id=aggregate)


async def restock(ctx: AnyContext, sku: str, quantity: int) -> None:
    await deliver(ctx, ProductCreated(sku=sku, name=sku, price_minor=100, currency="EUR"))
    async with ctx.pool.acquire() as conn:
        assert await store.restock(conn, sku, quantity) is not None


def lines(*pairs: tuple[str, int]) -> tuple[Line, ...]:
    return tuple(Line(sku=sku, quantity=q, unit_price_minor=100) for sku, q in pairs)


def created(order_id: str, *pairs: tuple[str, int]) -> OrderCreated:
    total = sum(q for _, q in pairs) * 100
    return OrderCreated(
        order_id=order_id,
        user_id="u1",
        email="u1@example.com",
        lines=lines(*pairs),
        total_minor=total,
        currency="EUR",
    )


def cancelled(order_id: str, *pairs: tuple[str, int], reserved: bool = True) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        user_id="u1",
        email="u1@example.com",
        reason="timeout",
        stock_reserved=reserved,
        lines=lines(*pairs),
    )


def confirmed(order_id: str, *pairs: tuple[str, int]) -> OrderConfirmed:
    total = sum(q for _, q in pairs) * 100
    return OrderConfirmed(
        order_id=order_id,
        user_id="u1",
        email="u1@example.com",
        total_minor=total,
        currency="EUR",
        lines=lines(*pairs),
    )


def new_order_id() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, Any]]:
    """(event_type, payload) of every event written to the outbox, in order."""
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    return [
        (env.event_type, payload) for env, payload in (registry.decode(r["body"]) for r in rows)
    ]


async def levels(pool: asyncpg.Pool, sku: str) -> tuple[int, int, int, int]:
    """(on_hand, reserved, sold, restocked_total) of a sku."""
    row = await pool.fetchrow(
        "SELECT on_hand, reserved, sold, restocked_total FROM stock WHERE sku = $1", sku
    )
    assert row is not None
    return row["on_hand"], row["reserved"], row["sold"], row["restocked_total"]


async def status_of(pool: asyncpg.Pool, order_id: str) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM reservations WHERE order_id = $1", order_id
    )
    return status


async def assert_conserved(pool: asyncpg.Pool) -> None:
    broken = await pool.fetch(
        "SELECT sku FROM stock WHERE on_hand + reserved + sold <> restocked_total"
        " OR on_hand < 0 OR reserved < 0 OR sold < 0"
    )
    assert broken == []


# -- the composition root -------------------------------------------------------------------------
def test_definition_says_what_inventory_takes_and_gives() -> None:
    assert set(definition.consumes) == {
        "product.created",
        "order.created",
        "order.cancelled",
        "order.confirmed",
    }
    assert set(definition.publishes_types) == {
        "inventory.reserved",
        "inventory.rejected",
        "inventory.released",
        "stock.adjusted",
    }


# -- handlers -------------------------------------------------------------------------------------
async def test_product_created_tracks_the_sku_at_zero_once(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    event = ProductCreated(sku="mug", name="Mug", price_minor=900, currency="EUR")
    await deliver(context, event)
    async with pool.acquire() as conn:
        assert await store.restock(conn, "mug", 4) is not None
    await deliver(context, event)  # the same fact again: the stock is not reset
    assert await levels(pool, "mug") == (4, 0, 0, 4)
    assert await outbox(pool) == []


async def test_order_created_reserves_every_line(context: AnyContext, pool: asyncpg.Pool) -> None:
    await restock(context, "a", 10)
    await restock(context, "b", 5)
    order = created(new_order_id(), ("a", 3), ("b", 5))
    await deliver(context, order)

    assert await levels(pool, "a") == (7, 3, 0, 10)
    assert await levels(pool, "b") == (0, 5, 0, 5)
    assert await status_of(pool, order.order_id) == "reserved"
    [(event_type, payload)] = await outbox(pool)
    assert event_type == "inventory.reserved"
    assert payload.order_id == order.order_id and payload.lines == order.lines


async def test_two_lines_of_one_sku_are_reserved_together(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 5)
    order = created(new_order_id(), ("a", 2), ("a", 3))
    await deliver(context, order)
    assert await levels(pool, "a") == (0, 5, 0, 5)


async def test_out_of_stock_rejects_and_changes_no_stock(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 10)
    await restock(context, "b", 1)
    order = created(new_order_id(), ("a", 3), ("b", 2))
    await deliver(context, order)

    assert await levels(pool, "a") == (10, 0, 0, 10)  # a had enough: still nothing taken
    assert await levels(pool, "b") == (1, 0, 0, 1)
    assert await status_of(pool, order.order_id) == "rejected"
    [(event_type, payload)] = await outbox(pool)
    assert event_type == "inventory.rejected"
    assert (payload.reason, payload.skus) == ("out_of_stock", ("b",))


async def test_unknown_sku_rejects(context: AnyContext, pool: asyncpg.Pool) -> None:
    await restock(context, "a", 10)
    order = created(new_order_id(), ("a", 1), ("ghost", 1))
    await deliver(context, order)

    assert await levels(pool, "a") == (10, 0, 0, 10)
    [(event_type, payload)] = await outbox(pool)
    assert event_type == "inventory.rejected"
    assert (payload.reason, payload.skus) == ("unknown_sku", ("ghost",))


async def test_cancel_releases_the_reservation_once(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 10)
    oid = new_order_id()
    await deliver(context, created(oid, ("a", 4)))
    await deliver(context, cancelled(oid, ("a", 4)))

    assert await levels(pool, "a") == (10, 0, 0, 10)
    assert await status_of(pool, oid) == "released"
    types = [t for t, _ in await outbox(pool)]
    assert types == ["inventory.reserved", "inventory.released"]
    _, released = (await outbox(pool))[1]
    assert released.order_id == oid and [(x.sku, x.quantity) for x in released.lines] == [("a", 4)]

    # the same facts again, and a confirm after the cancel: nothing moves, nothing is emitted
    await deliver(context, cancelled(oid, ("a", 4)))
    await deliver(context, created(oid, ("a", 4)))
    await deliver(context, confirmed(oid, ("a", 4)))
    assert await levels(pool, "a") == (10, 0, 0, 10)
    assert await status_of(pool, oid) == "released"
    assert len(await outbox(pool)) == 2


async def test_confirm_turns_reserved_into_sold_once(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 10)
    await restock(context, "b", 10)
    oid = new_order_id()
    await deliver(context, created(oid, ("b", 1), ("a", 4)))
    await deliver(context, confirmed(oid, ("b", 1), ("a", 4)))

    assert await levels(pool, "a") == (6, 0, 4, 10)
    assert await levels(pool, "b") == (9, 0, 1, 10)
    assert await status_of(pool, oid) == "committed"

    # duplicates, and a late cancel after the final state, change nothing
    await deliver(context, confirmed(oid, ("b", 1), ("a", 4)))
    await deliver(context, cancelled(oid, ("b", 1), ("a", 4)))
    await deliver(context, created(oid, ("b", 1), ("a", 4)))
    assert await levels(pool, "a") == (6, 0, 4, 10)
    assert await levels(pool, "b") == (9, 0, 1, 10)
    assert [t for t, _ in await outbox(pool)] == ["inventory.reserved"]


async def test_cancel_before_created_leaves_a_tombstone(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 10)
    oid = new_order_id()
    await deliver(context, cancelled(oid, ("a", 4), reserved=False))
    assert await status_of(pool, oid) == "cancelled_before_reserve"

    await deliver(context, created(oid, ("a", 4)))  # late: must reserve nothing
    assert await levels(pool, "a") == (10, 0, 0, 10)
    assert await status_of(pool, oid) == "cancelled_before_reserve"
    assert await outbox(pool) == []


async def test_duplicate_order_created_reserves_once(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 10)
    order = created(new_order_id(), ("a", 3))
    await deliver(context, order)
    await deliver(context, order)
    assert await levels(pool, "a") == (7, 3, 0, 10)
    assert [t for t, _ in await outbox(pool)] == ["inventory.reserved"]


async def test_cancel_of_a_rejected_order_releases_nothing(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 1)
    oid = new_order_id()
    await deliver(context, created(oid, ("a", 2)))
    await deliver(context, cancelled(oid, ("a", 2), reserved=False))
    assert await levels(pool, "a") == (1, 0, 0, 1)
    assert await status_of(pool, oid) == "rejected"
    assert [t for t, _ in await outbox(pool)] == ["inventory.rejected"]


async def test_the_table_refuses_a_broken_invariant(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "a", 1)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE stock SET on_hand = on_hand + 1 WHERE sku = 'a'")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE stock SET on_hand = -1, sold = 2 WHERE sku = 'a'")


# -- races ----------------------------------------------------------------------------------------
async def test_200_orders_race_for_50_units(
    context: AnyContext, pool: asyncpg.Pool, wide: AnyContext
) -> None:
    await restock(context, "hot", 50)
    orders = [created(new_order_id(), ("hot", 1)) for _ in range(200)]
    await asyncio.gather(*(deliver(wide, o) for o in orders))

    assert await levels(pool, "hot") == (0, 50, 0, 50)
    await assert_conserved(pool)
    outcomes = [t for t, _ in await outbox(pool)]
    assert outcomes.count("inventory.reserved") == 50
    assert outcomes.count("inventory.rejected") == 150
    statuses = await pool.fetch("SELECT status, count(*) AS n FROM reservations GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"reserved": 50, "rejected": 150}


async def test_multi_sku_orders_in_any_line_order_never_deadlock(
    context: AnyContext, pool: asyncpg.Pool, wide: AnyContext
) -> None:
    """Orders over overlapping skus, lines in random order, racing with cancels and confirms:
    the sku-ordered locks let every transaction through, and the units add up."""
    skus = ["s1", "s2", "s3", "s4"]
    for sku in skus:
        await restock(context, sku, 60)
    rng = random.Random(7)
    orders = []
    for _ in range(120):
        picked = rng.sample(skus, rng.randint(2, 4))  # random order: the handler must sort
        orders.append((new_order_id(), [(s, rng.randint(1, 3)) for s in picked]))

    async def life(order_id: str, pairs: list[tuple[str, int]], fate: int) -> None:
        await deliver(wide, created(order_id, *pairs))
        if fate == 0:
            await deliver(wide, cancelled(order_id, *pairs))
        elif fate == 1:
            await deliver(wide, confirmed(order_id, *pairs))

    await asyncio.gather(*(life(oid, pairs, i % 3) for i, (oid, pairs) in enumerate(orders)))

    await assert_conserved(pool)
    held = await pool.fetch(
        "SELECT r.status, l->>'sku' AS sku, sum((l->>'quantity')::int) AS q FROM reservations r,"
        " jsonb_array_elements(r.lines) l GROUP BY r.status, l->>'sku'"
    )
    by = {(r["status"], r["sku"]): r["q"] for r in held}
    for sku in skus:
        on_hand, reserved, sold, total = await levels(pool, sku)
        assert (on_hand + reserved + sold, total) == (60, 60)
        assert reserved == by.get(("reserved", sku), 0)
        assert sold == by.get(("committed", sku), 0)


async def test_cancel_racing_created_never_leaves_units_held(
    context: AnyContext, pool: asyncpg.Pool, wide: AnyContext
) -> None:
    """order.created and order.cancelled of one order delivered at once, both ways round: the
    order ends released or tombstoned, never reserved."""
    await restock(context, "a", 1_000)
    oids = [new_order_id() for _ in range(60)]

    async def both(i: int, oid: str) -> None:
        first: EventPayload = created(oid, ("a", 2))
        second: EventPayload = cancelled(oid, ("a", 2))
        if i % 2:
            first, second = second, first
        await asyncio.gather(deliver(wide, first), deliver(wide, second))

    await asyncio.gather(*(both(i, oid) for i, oid in enumerate(oids)))

    assert await levels(pool, "a") == (1_000, 0, 0, 1_000)
    statuses = {r["status"] for r in await pool.fetch("SELECT status FROM reservations")}
    assert statuses <= {"released", "cancelled_before_reserve"}
    events = [t for t, _ in await outbox(pool)]
    assert events.count("inventory.reserved") == events.count("inventory.released")


async def blocked_on_a_lock(pool: asyncpg.Pool, schema: str) -> None:
    """Wait (bounded) until a connection of `schema`'s pools waits on a row or key lock."""
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND application_name = $1",
            f"eventshop-{schema}",
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no transaction ever waited on a lock")


@pytest.mark.parametrize("first", ["created", "cancelled"])
async def test_the_second_event_of_an_order_waits_for_the_first(
    first: str,
    context: AnyContext,
    schema_pool: tuple[str, asyncpg.Pool],
    wide_pool: asyncpg.Pool,
    wide: AnyContext,
) -> None:
    """Pin the interleaving the random race above may or may not hit: the first event's
    transaction has made the order's row but not committed; the second must wait for it and
    then act on what it committed (release the reservation / reserve nothing)."""
    schema, pool = schema_pool
    await restock(context, "a", 5)
    oid = new_order_id()
    events: dict[str, EventPayload] = {
        "created": created(oid, ("a", 2)),
        "cancelled": cancelled(oid, ("a", 2)),
    }
    second = "cancelled" if first == "created" else "created"
    async with wide_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        event = events[first]
        env = new_envelope(event.event_type, 1, oid, event.model_dump(mode="json"))
        uow = UnitOfWork(conn=conn, service="inventory", correlation_id="c")
        await definition.bind(context)[event.event_type](uow, env, event)
        late = asyncio.create_task(deliver(wide, events[second]))
        await blocked_on_a_lock(pool, schema)
        await uow.flush()
        await tx.commit()
    await late

    assert await levels(pool, "a") == (5, 0, 0, 5)
    expected = "released" if first == "created" else "cancelled_before_reserve"
    assert await status_of(pool, oid) == expected


# -- routes ---------------------------------------------------------------------------------------
async def test_stock_of_a_sku(
    context: AnyContext, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await restock(context, "a", 10)
    await deliver(context, created(new_order_id(), ("a", 3)))

    r = await client.get("/stock/a", headers=CUSTOMER)
    assert r.status_code == 200
    assert r.json() == {
        "sku": "a",
        "on_hand": 7,
        "reserved": 3,
        "sold": 0,
        "available": 7,
        "restocked_total": 10,
    }
    missing = await client.get("/stock/nope", headers=CUSTOMER)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (await client.get("/stock/a")).status_code == 401


async def test_stock_pages(
    context: AnyContext, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    for sku in ["c", "a", "b"]:
        await restock(context, sku, 1)
    first = (await client.get("/stock?limit=2", headers=CUSTOMER)).json()
    assert [s["sku"] for s in first["items"]] == ["a", "b"]
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    second = (await client.get("/stock?limit=2&offset=2", headers=CUSTOMER)).json()
    assert [s["sku"] for s in second["items"]] == ["c"]
    past = (await client.get("/stock?offset=10", headers=CUSTOMER)).json()
    assert (past["items"], past["total"]) == ([], 3)
    assert (await client.get("/stock?limit=0", headers=CUSTOMER)).status_code == 422
    assert (await client.get("/stock?limit=101", headers=CUSTOMER)).status_code == 422


async def test_restock_adds_units_and_emits_stock_adjusted(
    context: AnyContext, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await deliver(context, ProductCreated(sku="a", name="A", price_minor=1, currency="EUR"))
    r = await client.post(
        "/stock/a/restock", json={"quantity": 25}, headers={**ADMIN, "X-Correlation-ID": "cid-9"}
    )
    assert r.status_code == 200
    assert r.json()["on_hand"] == 25 and r.json()["restocked_total"] == 25
    await client.post("/stock/a/restock", json={"quantity": 5}, headers=ADMIN)
    assert await levels(pool, "a") == (30, 0, 0, 30)

    rows = await pool.fetch("SELECT body, correlation_id FROM outbox ORDER BY id")
    assert rows[0]["correlation_id"] == "cid-9"
    adjusted = [cast(StockAdjusted, registry.decode(row["body"])[1]) for row in rows]
    assert [(e.sku, e.delta, e.on_hand, e.reason) for e in adjusted] == [
        ("a", 25, 25, "restock"),
        ("a", 5, 30, "restock"),
    ]


async def test_restock_refusals(
    context: AnyContext, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    await deliver(context, ProductCreated(sku="a", name="A", price_minor=1, currency="EUR"))

    unknown = await client.post("/stock/ghost/restock", json={"quantity": 1}, headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    customer = await client.post("/stock/a/restock", json={"quantity": 1}, headers=CUSTOMER)
    assert customer.status_code == 403
    for body in (
        {"quantity": 0},
        {"quantity": 1_000_001},
        {"quantity": "5"},
        {"quantity": 2.5},
        {"quantity": 1, "note": "extra"},
        {},
    ):
        r = await client.post("/stock/a/restock", json=body, headers=ADMIN)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "validation_error"
    assert await levels(pool, "a") == (0, 0, 0, 0)
    assert await outbox(pool) == []
