"""orders as an event-sourced service, against the real PostgreSQL: upcasting of a stored v1
row, snapshots, time travel, its projections (live and rebuilt) and replay = read model.

Real: PostgreSQL (a random schema per test, migrated). Orders are placed through the routes
(httpx ASGI transport) and moved through the saga by its handlers, each in its own unit of
work, as in test_orders.py, whose helpers this module shares. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from eventshop.contracts.inventory import InventoryRejected
from eventshop.contracts.payments import PaymentFailed
from eventshop.platform.eventstore import Snapshot, SnapshotPolicy
from eventshop.platform.eventstore.projections import CatchUp
from eventshop.platform.eventstore.rebuild import rebuild
from eventshop.services.orders import domain, eventlog, handlers, projections, store
from eventshop.services.orders.domain import payment_id_for
from tests.integration.services import test_orders as orders_tests
from tests.integration.services.test_orders import (
    ClientFactory,
    customer,
    deliver,
    paid_in_full,
    place,
    reserved,
    seed_prices,
    succeeded,
    time_out_due_orders,
)

pytestmark = pytest.mark.integration

# orders' schema, as test_orders.py has it (the fixtures in conftest.py read these two), and
# that module's HTTP clients on orders' app
SERVICE = orders_tests.SERVICE
MIGRATIONS = orders_tests.MIGRATIONS
make_client = orders_tests.make_client
client = orders_tests.client


async def confirmed_order(client: httpx.AsyncClient, pool: asyncpg.Pool) -> str:
    order_id = await place(client, customer())
    await deliver(pool, reserved(order_id))
    await deliver(pool, succeeded(order_id))
    return order_id


async def history(client: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        f"/orders/{order_id}/history",
        headers={"X-User-Id": "a", "X-User-Role": "admin", "X-User-Email": "a@example.com"},
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


# -- upcasting ----------------------------------------------------------------------------------
async def test_a_stored_v1_payment_succeeded_row_is_read_as_v2(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The row is written as the code before PaymentSucceeded v2 wrote it: no currency."""
    order_id = await place(client, customer())
    await deliver(pool, reserved(order_id))
    async with pool.acquire() as conn, conn.transaction():
        position = await conn.fetchval(
            "UPDATE event_log_head SET position = position + 2 RETURNING position"
        )
        await conn.execute(
            """
            INSERT INTO events (global_position, stream_id, version, event_type, schema_version,
                                payload, metadata)
            VALUES ($1, $3, 4, 'PaymentSucceeded', 1,
                    '{"payment_id": "pay-old", "amount_minor": 4500}', '{}'),
                   ($2, $3, 5, 'OrderConfirmed', 1, '{}', '{}')
            """,
            position - 1,
            position,
            store.stream_of(order_id),
        )
        await conn.execute(
            "UPDATE orders SET status = 'CONFIRMED', version = 5 WHERE order_id = $1", order_id
        )
        raw = await conn.fetchrow(
            "SELECT schema_version, payload FROM events WHERE stream_id = $1 AND version = 4",
            store.stream_of(order_id),
        )
    assert (raw["schema_version"], orjson.loads(raw["payload"])) == (
        1,
        {"payment_id": "pay-old", "amount_minor": 4500},
    )

    entries = await history(client, order_id)
    v4 = entries[3]
    assert (v4["event_type"], v4["schema_version"], v4["stored_schema_version"]) == (
        "PaymentSucceeded",
        2,
        1,
    )
    assert v4["data"] == {"payment_id": "pay-old", "amount_minor": 4500, "currency": None}
    assert [e["status_after"] for e in entries][-1] == "CONFIRMED"
    async with pool.acquire() as conn:
        (recorded,) = await store.events.load(conn, store.stream_of(order_id), 3, to_version=4)
        order = await store.load_order(conn, order_id)
    assert store.to_domain(recorded) == domain.PaymentSucceeded(
        payment_id="pay-old", amount_minor=4500, currency=None
    )
    assert order is not None and (order.status, order.payment_id) == (
        domain.Status.CONFIRMED,
        "pay-old",
    )
    # the saga goes on over the old row: a late event changes nothing, as for any final order
    await deliver(
        pool,
        PaymentFailed(payment_id=payment_id_for(order_id), order_id=order_id, reason="declined"),
    )
    async with pool.acquire() as conn:
        assert await store.read_model_differences(conn, [order_id]) == {}


async def test_a_payment_recorded_now_is_stored_as_v2_with_its_currency(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    order_id = await confirmed_order(client, pool)
    v4 = (await history(client, order_id))[3]
    assert (v4["schema_version"], v4["stored_schema_version"]) == (2, None)
    assert v4["data"]["currency"] == "EUR"


# -- snapshots ----------------------------------------------------------------------------------
async def test_snapshots_are_used_on_load_and_never_needed(
    client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_2 = SnapshotPolicy(every=2)  # EVENTSHOP_ORDERS_SNAPSHOT_EVERY=2, as its handlers read it
    monkeypatch.setattr(handlers, "snapshots_of", lambda ctx: every_2)
    order_id = await confirmed_order(client, pool)
    sid = store.stream_of(order_id)
    async with pool.acquire() as conn:
        snapshot = await store.events.load_snapshot(conn, sid)
        assert snapshot is not None and snapshot.version == 5  # taken at 3, then at 5
        assert snapshot.taken_at is not None
        replayed = await store.order_as_of(
            conn, order_id, at=snapshot.taken_at + timedelta(1), snapshots=every_2
        )
        loaded = await store.load_order(conn, order_id, every_2)
        assert loaded == replayed and loaded is not None
        assert eventlog.CODEC.decode(snapshot.state) == loaded

        # used: a snapshot that says something else is what the load starts from
        forged = eventlog.CODEC.encode(loaded)
        forged["email"] = "from-the-snapshot@example.com"
        await store.events.save_snapshot(
            conn, Snapshot(sid, 5, eventlog.CODEC.schema_version, forged)
        )
        assert (await store.load_order(conn, order_id, every_2)).email == forged["email"]  # type: ignore[union-attr]

        # never needed: one of another shape is ignored, and without any the state is the same
        await store.events.save_snapshot(conn, Snapshot(sid, 5, 99, {"old": "shape"}))
        assert await store.load_order(conn, order_id, every_2) == loaded
        await conn.execute("DELETE FROM snapshots")
        assert await store.load_order(conn, order_id, every_2) == loaded


# -- time travel --------------------------------------------------------------------------------
async def test_an_order_as_of_any_version_or_time(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    order_id = await confirmed_order(client, pool)
    async with pool.acquire() as conn:
        recorded = await store.history_of(conn, order_id)
        assert len(recorded) == 5
        assert await store.order_as_of(conn, order_id, version=0) is None
        before = recorded[0].recorded_at - timedelta(microseconds=1)
        assert await store.order_as_of(conn, order_id, at=before) is None
        statuses = []
        for r in recorded:
            by_version = await store.order_as_of(conn, order_id, version=r.version)
            by_time = await store.order_as_of(conn, order_id, at=r.recorded_at)
            expected = domain.replay(store.to_domain(e) for e in recorded[: r.version])
            assert by_version == by_time == expected
            assert by_version is not None and by_version.version == r.version
            statuses.append(by_version.status.value)
    assert statuses == ["PENDING", "PENDING", "AWAITING_PAYMENT", "AWAITING_PAYMENT", "CONFIRMED"]


async def test_time_travel_over_http(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    owner = customer()
    order_id = await place(client, owner)
    await deliver(pool, reserved(order_id))
    await deliver(pool, succeeded(order_id))
    entries = await history(client, order_id)
    url = f"/orders/{order_id}/as-of"

    for entry in entries:
        by_version = await client.get(url, params={"version": entry["version"]}, headers=owner)
        by_time = await client.get(url, params={"at": entry["recorded_at"]}, headers=owner)
        assert by_version.status_code == by_time.status_code == 200, by_version.text
        assert by_version.json() == by_time.json()
        assert by_version.json()["status"] == entry["status_after"]
        assert by_version.json()["version"] == entry["version"]
    assert [e["status_after"] for e in entries][-1] == "CONFIRMED"

    first = datetime.fromisoformat(entries[0]["recorded_at"])
    too_early = (first - timedelta(seconds=1)).isoformat()
    answer = await client.get(url, params={"at": too_early}, headers=owner)
    assert answer.status_code == 404
    assert (await client.get(url, params={"version": 1}, headers=customer())).status_code == 404
    for params in ({}, {"version": 1, "at": entries[0]["recorded_at"]}):
        answer = await client.get(url, params=params, headers=owner)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "validation_error"
    answer = await client.get(url, params={"at": "2026-01-01T00:00:00"}, headers=owner)
    assert answer.status_code == 422 and "offset" in answer.json()["error"]["message"]


# -- projections and replay ---------------------------------------------------------------------
async def run_a_small_shop(make_client: ClientFactory, pool: asyncpg.Pool) -> list[str]:
    """Orders of three users ending every way the saga can end, and a few still running."""
    await seed_prices(pool)
    patient, hasty = await make_client(), await make_client(timeout_s=0)
    users = [customer() for _ in range(3)]
    placed: list[str] = []
    for i in range(24):
        who = users[i % 3]
        lines = [{"sku": "MUG", "quantity": 1 + i % 3}] + (
            [{"sku": "TEE", "quantity": 1}] if i % 2 else []
        )
        outcome = i % 6
        order_id = await place(hasty if outcome == 4 else patient, who, lines)
        placed.append(order_id)
        if outcome in (0, 1, 2, 3):
            await deliver(pool, reserved(order_id))
        if outcome in (0, 1):
            await deliver(pool, await paid_in_full(pool, order_id))
        elif outcome == 2:
            fraud = PaymentFailed(
                payment_id=payment_id_for(order_id), order_id=order_id, reason="fraud"
            )
            await deliver(pool, fraud)
        elif outcome == 5:
            await deliver(pool, InventoryRejected(order_id=order_id, reason="out_of_stock"))
    await time_out_due_orders(pool)
    return placed


async def projection_tables(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
        for p in projections.PROJECTIONS
        for table in p.tables
    }


async def test_the_projections_agree_with_the_read_model_and_rebuild_identical(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    live = [CatchUp(pool, store.events, p, batch=10) for p in projections.PROJECTIONS]
    for runner in live:
        await runner.setup()
    placed = await run_a_small_shop(make_client, pool)
    for runner in live:
        assert await runner.catch_up() > 0

    rows = await pool.fetch("SELECT * FROM orders")
    assert len(rows) == len(placed) == 24
    by_user = {r["order_id"]: r for r in await pool.fetch("SELECT * FROM orders_by_user")}
    statuses: Counter[tuple[str, str | None]] = Counter()
    expected_sales: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        mine = by_user[row["order_id"]]
        fields = ("user_id", "status", "reason", "total_minor", "currency", "version")
        assert {f: mine[f] for f in fields} == {f: row[f] for f in fields}
        assert mine["placed_at"] == row["created_at"]
        lines = orjson.loads(row["lines"])
        assert mine["items"] == sum(line["quantity"] for line in lines)
        statuses[row["status"], row["reason"]] += 1
        for line in lines:
            if row["status"] == "CONFIRMED":
                expected_sales[line["sku"], row["currency"], "orders"] += 1
                expected_sales[line["sku"], row["currency"], "units"] += line["quantity"]
                expected_sales[line["sku"], row["currency"], "revenue_minor"] += (
                    line["quantity"] * line["unit_price_minor"]
                )
            elif row["status"] == "CANCELLED":
                expected_sales[line["sku"], row["currency"], "cancelled_units"] += line["quantity"]
    assert statuses == {
        ("CONFIRMED", None): 8,
        ("CANCELLED", "fraud"): 4,
        ("CANCELLED", "timeout"): 4,
        ("CANCELLED", "out_of_stock"): 4,
        ("AWAITING_PAYMENT", None): 4,
    }
    sales: Counter[tuple[str, str, str]] = Counter()
    for r in await pool.fetch("SELECT * FROM sales_per_sku"):
        for column in ("orders", "units", "revenue_minor", "cancelled_units"):
            if r[column]:
                sales[r["sku"], r["currency"], column] = r[column]
    assert sales == expected_sales
    open_orders = await pool.fetchval("SELECT count(*) FROM sales_open_orders")
    assert open_orders == 4  # the ones still awaiting payment

    before = await projection_tables(pool)
    for projection in projections.PROJECTIONS:
        report = await rebuild(pool, store.events, projection, batch=7)
        assert (report.differences, report.swapped) == (0, True)
    assert await projection_tables(pool) == before

    async with pool.acquire() as conn:
        assert await store.read_model_differences(conn) == {}


async def test_rebuilding_while_orders_keep_coming_ends_identical(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    projection = projections.projection_named("sales_per_sku")
    live = CatchUp(pool, store.events, projection, batch=5, poll_s=0.01)
    await live.setup()
    await run_a_small_shop(make_client, pool)
    following = asyncio.create_task(live.run())
    more = asyncio.create_task(run_a_small_shop(make_client, pool))
    try:
        report = await rebuild(pool, store.events, projection, batch=3)
        await more
        await live.catch_up()
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert report.differences == 0
    check = await rebuild(pool, store.events, projection, swap=False)
    assert check.differences == 0 and check.position == await pool.fetchval(
        "SELECT position FROM event_log_head"
    )


async def test_a_read_model_that_strays_from_its_stream_is_reported(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    good, bad = await confirmed_order(client, pool), await confirmed_order(client, pool)
    await pool.execute("UPDATE orders SET status = 'CANCELLED' WHERE order_id = $1", bad)
    async with pool.acquire() as conn:
        differences = await store.read_model_differences(conn, [good, bad, str(uuid.uuid4())])
    assert list(differences) == [bad]
    assert differences[bad] == ["status: stream says 'CONFIRMED', read model 'CANCELLED'"]


def test_there_is_no_projection_by_that_name() -> None:
    with pytest.raises(LookupError, match="orders has: orders_by_user, sales_per_sku"):
        projections.projection_named("nope")
