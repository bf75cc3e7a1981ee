"""The retention job (platform/retention.py, ADR 0009) against the real PostgreSQL and RabbitMQ.

Real: PostgreSQL (random schemas, migrated like orders', which has all three tables: inbox,
outbox, idempotency_keys), RabbitMQ for the late duplicate (a real consumer on the test run's
vhost), and in the last test a throwaway database with a service role made by
tooling/dbroles.py. Rows are made old by writing their timestamps in the past; a pass is run
directly, as the job runs it on its interval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from eventshop.contracts.catalog import ProductCreated
from eventshop.platform import eventstore
from eventshop.platform.bus.inbox import record_new, record_one
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate
from eventshop.platform.retention import lock_key, retention_pass
from eventshop.platform.settings import PlatformSettings
from eventshop.services.orders.service import definition as orders
from eventshop.services.orders.store import KeyClaim, claim_idempotency_keys
from eventshop.tooling.dbroles import database_url, provision, role_name
from tests.conftest import DATABASE_URL, SchemaFactory
from tests.integration.helpers import PINGED, Bus, consumer_of, effects_of, ping, record_effect
from tests.support.polling import eventually
from tests.support.services import deliver, http_client, service_context

pytestmark = pytest.mark.integration

ORDERS_MIGRATIONS = [eventstore.MIGRATIONS, "eventshop.services.orders.migrations"]
DAY = 86_400.0


@pytest.fixture
async def schema_pool(make_schema: SchemaFactory) -> tuple[str, asyncpg.Pool]:
    """A schema with every table the job keeps bounded (orders' migrations on the platform's)."""
    schema, pool = await make_schema("retention")
    await migrate(pool, ORDERS_MIGRATIONS)
    return schema, pool


@pytest.fixture
def pool(schema_pool: tuple[str, asyncpg.Pool]) -> asyncpg.Pool:
    return schema_pool[1]


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def add_inbox(pool: asyncpg.Pool, n: int, age_s: float, consumer: str = "c") -> None:
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, handled_at)"
        " SELECT $1, gen_random_uuid(), $3 FROM generate_series(1, $2)",
        consumer,
        n,
        ago(age_s),
    )


async def add_outbox(pool: asyncpg.Pool, *, sent_age_s: float | None, created_age_s: float) -> str:
    """One event, sent `sent_age_s` ago (in outbox_sent, as the relay leaves it) or never (None:
    in the outbox); returns its id."""
    event_id = ping(0).event_id
    if sent_age_s is None:
        await pool.execute(
            "INSERT INTO outbox (event_id, event_type, aggregate_id, correlation_id,"
            " schema_version, occurred_at, body, created_at)"
            " VALUES ($1, 'selfcheck.pinged', 'a', 'c', 2, $2, '\\x00', $2)",
            event_id,
            ago(created_age_s),
        )
    else:
        await pool.execute(
            "INSERT INTO outbox_sent (id, event_id, event_type, aggregate_id, correlation_id,"
            " schema_version, occurred_at, body, created_at, sent_at, attempts)"
            " VALUES (nextval('outbox_id_seq'), $1, 'selfcheck.pinged', 'a', 'c', 2, $2,"
            " '\\x00', $2, $3, 1)",
            event_id,
            ago(created_age_s),
            ago(sent_age_s),
        )
    return str(event_id)


async def add_keys(pool: asyncpg.Pool, n: int, age_s: float) -> None:
    await pool.execute(
        "INSERT INTO idempotency_keys (user_id, key, order_id, request_hash, created_at)"
        " SELECT 'u', 'k-' || gen_random_uuid(), 'o', 'h', $2 FROM generate_series(1, $1)",
        n,
        ago(age_s),
    )


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    return int(await pool.fetchval(sql, *args))


def deleted_metric(service: str, table: str) -> float:
    labels = {"service": service, "table": table}
    return REGISTRY.get_sample_value("eventshop_retention_deleted_total", labels) or 0.0


# -- what goes and what stays ---------------------------------------------------------------------


async def test_rows_past_their_window_are_deleted_and_newer_ones_kept(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    s = settings.model_copy(update={"retention_batch": 2})  # several batches per table
    inbox_s, outbox_s, keys_s = 7 * DAY, 3_600.0, DAY
    assert (s.retention_inbox_s, s.retention_outbox_sent_s, s.retention_idempotency_keys_s) == (
        inbox_s,
        outbox_s,
        keys_s,
    )  # the documented defaults (ADR 0009)
    await add_inbox(pool, 5, inbox_s + 60)
    await add_inbox(pool, 3, inbox_s - 600)
    old_sent = [await add_outbox(pool, sent_age_s=outbox_s + 60, created_age_s=DAY) for _ in "ab"]
    young_sent = await add_outbox(pool, sent_age_s=outbox_s - 600, created_age_s=DAY)
    await add_keys(pool, 4, keys_s + 60)
    await add_keys(pool, 2, keys_s - 600)
    service = f"svc_{uuid.uuid4().hex[:8]}"

    report = await retention_pass(pool, s, service=service)

    assert report.deleted == {"inbox": 5, "outbox_sent": 2, "idempotency_keys": 4}
    assert not report.yielded
    assert await count(pool, "SELECT count(*) FROM inbox") == 3
    assert (
        await count(
            pool, "SELECT count(*) FROM outbox_sent WHERE event_id::text = ANY($1)", old_sent
        )
        == 0
    )
    assert [str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM outbox_sent")] == [
        young_sent
    ]
    assert await count(pool, "SELECT count(*) FROM idempotency_keys") == 2
    assert deleted_metric(service, "inbox") == 5
    assert deleted_metric(service, "outbox_sent") == 2
    assert deleted_metric(service, "idempotency_keys") == 4

    again = await retention_pass(pool, s, service=service)
    assert again.total == 0 and deleted_metric(service, "inbox") == 5


async def test_an_unsent_outbox_row_is_never_deleted_however_old(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    unsent = await add_outbox(pool, sent_age_s=None, created_age_s=365 * DAY)
    sent = await add_outbox(pool, sent_age_s=2 * 3_600, created_age_s=365 * DAY)

    report = await retention_pass(pool, settings, service="svc")

    assert report.deleted["outbox_sent"] == 1
    assert [r["id"] for r in await pool.fetch("SELECT event_id::text AS id FROM outbox")] == [
        unsent
    ]
    assert await count(pool, "SELECT count(*) FROM outbox_sent") == 0
    assert sent != unsent


async def test_a_schema_without_idempotency_keys_is_kept_bounded_too(
    make_schema: SchemaFactory, settings: PlatformSettings
) -> None:
    """Every service gets the job with no code of its own: the tables it has are kept bounded."""
    _, plain = await make_schema("plain")  # the platform's tables only, as loyalty's schema
    await add_inbox(plain, 3, 8 * DAY)
    report = await retention_pass(plain, settings, service="plain")
    assert report.deleted == {"inbox": 3, "outbox_sent": 0}


# -- a late duplicate never gets through within the window ----------------------------------------


async def test_a_duplicate_within_the_window_is_refused_after_the_job_ran(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    """At the inbox itself: ids handled just inside the window stay duplicates; the contrast,
    ids past it, shows the pass did run and what the window is for."""
    inside, outside = uuid.uuid4(), uuid.uuid4()
    batch = [uuid.uuid4() for _ in range(50)]
    async with pool.acquire() as conn:
        assert await record_one(conn, "c", inside) and await record_one(conn, "c", outside)
        assert await record_new(conn, "c", batch) == set(batch)
    window = settings.retention_inbox_s
    await pool.execute(
        "UPDATE inbox SET handled_at = $2 WHERE event_id <> $1", outside, ago(window - 60)
    )
    await pool.execute(
        "UPDATE inbox SET handled_at = $2 WHERE event_id = $1", outside, ago(window + 60)
    )

    report = await retention_pass(pool, settings, service="svc")

    assert report.deleted["inbox"] == 1
    async with pool.acquire() as conn:
        assert await record_one(conn, "c", inside) is False  # still a duplicate
        fresh = uuid.uuid4()
        assert await record_new(conn, "c", [*batch, fresh]) == {fresh}  # the 50: refused
        assert await record_one(conn, "c", outside) is True  # past the window: new again


async def test_a_redelivered_event_within_the_window_has_no_second_effect(bus: Bus) -> None:
    """Through the broker and a real consumer: an event handled, its inbox row aged to just
    inside the window, the job run, then the same event delivered again: acknowledged as a
    duplicate, one effect."""
    node, cpool = await bus.node({PINGED: record_effect})
    publisher = await bus.publisher()
    env = ping(1)
    await publisher.publish(PINGED, message_from_envelope(env))
    await eventually(lambda: effects_of(cpool, env.event_id), 1)
    window = bus.settings.retention_inbox_s
    await cpool.execute("UPDATE inbox SET handled_at = $1", ago(window - 60))
    await add_inbox(cpool, 10, window + 60, consumer="someone-else")

    report = await retention_pass(cpool, bus.settings, service=node.service)
    assert report.deleted["inbox"] == 10

    stats = consumer_of(node).stats
    await publisher.publish(PINGED, message_from_envelope(env))
    await eventually(lambda: stats.duplicates, 1)
    assert await effects_of(cpool, env.event_id) == 1


# -- idempotency keys ------------------------------------------------------------------------------


async def test_a_retried_request_within_the_window_gets_the_first_answer_after_the_job_ran(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    schema, pool = schema_pool
    async with service_context(orders, schema, pool, settings) as ctx:
        await deliver(ctx, ProductCreated(sku="MUG", name="Mug", price_minor=1_250, currency="EUR"))
        async with http_client(ctx) as client:
            who = {
                "X-User-Id": "user-1",
                "X-User-Role": "customer",
                "X-User-Email": "user-1@example.com",
                "Idempotency-Key": f"key-{uuid.uuid4().hex}",
            }
            body = {"lines": [{"sku": "MUG", "quantity": 1}]}

            async def place() -> httpx.Response:
                response = await client.post("/orders", json=body, headers=who)
                assert response.status_code == 202, response.text
                return response

            first = await place()
            window = settings.retention_idempotency_keys_s
            await pool.execute("UPDATE idempotency_keys SET created_at = $1", ago(window - 60))
            await add_keys(pool, 3, window + 60)
            assert (await retention_pass(pool, settings, service="orders")).deleted[
                "idempotency_keys"
            ] == 3

            retried = await place()
            assert retried.json() == first.json()
            assert await count(pool, "SELECT count(*) FROM orders") == 1

            # after the window the key is free: the same request is a new order (ADR 0009)
            await pool.execute("UPDATE idempotency_keys SET created_at = $1", ago(window + 60))
            await retention_pass(pool, settings, service="orders")
            late = await place()
            assert late.json()["order_id"] != first.json()["order_id"]
            assert await count(pool, "SELECT count(*) FROM orders") == 2


# -- replicas and batches --------------------------------------------------------------------------


async def test_two_replicas_racing_delete_every_row_once_and_never_deadlock(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    schema, pool = schema_pool
    s = settings.model_copy(update={"retention_batch": 250})
    await add_inbox(pool, 6_000, 8 * DAY)
    await add_inbox(pool, 500, DAY)
    await add_keys(pool, 1_000, 2 * DAY)
    for _ in range(20):
        await add_outbox(pool, sent_age_s=2 * 3_600, created_age_s=DAY)
    other = await create_pool(settings.database_url, schema, max_size=2)  # another process
    try:
        reports = await asyncio.wait_for(
            asyncio.gather(
                *(
                    retention_pass(p, s, service="racing", pause_s=0.001)
                    for p in (pool, other, pool, other)
                )
            ),
            timeout=60,
        )
        # whichever left the rest to another, a later pass finds nothing left to do
        reports.append(await retention_pass(other, s, service="racing"))
    finally:
        await other.close()
    for table, expected in (("inbox", 6_000), ("idempotency_keys", 1_000), ("outbox_sent", 20)):
        assert sum(r.deleted.get(table, 0) for r in reports) == expected, table
    assert all(n <= 250 for r in reports for n in r.batches)
    assert await count(pool, "SELECT count(*) FROM inbox") == 500
    assert await count(pool, "SELECT count(*) FROM idempotency_keys") == 0


async def test_a_pass_leaves_the_work_to_the_replica_that_holds_the_lock(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    schema, pool = schema_pool
    await add_inbox(pool, 10, 8 * DAY)
    holder = await asyncpg.connect(settings.database_url)
    try:
        async with holder.transaction():  # another replica, in the middle of a batch
            await holder.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
            report = await asyncio.wait_for(retention_pass(pool, settings, service="s"), 5)
            assert report.yielded and report.total == 0
    finally:
        await holder.close()
    assert (await retention_pass(pool, settings, service="s")).deleted["inbox"] == 10


async def test_batches_are_bounded_and_each_commits_on_its_own(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    s = settings.model_copy(update={"retention_batch": 1_000})
    await add_inbox(pool, 2_500, 8 * DAY)
    await add_inbox(pool, 7, DAY)
    watcher = await asyncpg.connect(settings.database_url)
    seen: list[tuple[int, int]] = []
    schema = await pool.fetchval("SELECT current_schema()")

    async def after_batch(table: str, n: int) -> None:
        if table == "inbox":  # what another session sees between two batches: committed
            seen.append((n, await watcher.fetchval(f'SELECT count(*) FROM "{schema}".inbox')))

    try:
        report = await retention_pass(pool, s, service="s", on_batch=after_batch)
    finally:
        await watcher.close()
    assert seen == [(1_000, 1_507), (1_000, 507), (500, 7)]
    assert max(report.batches) == 1_000


# -- the service's own role is enough ------------------------------------------------------------


@pytest.fixture
def secrets_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    where = tmp_path / "secrets"
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(where))
    yield where


async def test_the_services_own_role_is_enough(
    secrets_here: Path, settings: PlatformSettings
) -> None:
    tag = uuid.uuid4().hex[:8]
    database, service = f"retention_{tag}", f"svcr_{tag}"
    parts = urlsplit(DATABASE_URL)
    root_url = urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))
    admin = await asyncpg.connect(DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        await provision(root_url, [service])
        pool = await create_pool(database_url(service, root_url), service, max_size=2)
        try:
            assert await pool.fetchval("SELECT current_user") == role_name(service)
            await migrate(pool, [PLATFORM_MIGRATIONS])
            await add_inbox(pool, 5, 8 * DAY)
            await add_outbox(pool, sent_age_s=2 * 3_600, created_age_s=DAY)
            report = await retention_pass(pool, settings, service=service)
            assert report.deleted == {"inbox": 5, "outbox_sent": 1}
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role_name(service)}"')
        await admin.close()


class _KeyDeletedAfterTheConflict:
    """A connection on which the retention job deletes the key right after the claim's INSERT
    found it taken: the one moment `claim_idempotency_keys` could see it neither way."""

    def __init__(self, conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
        self._conn, self._pool, self.deleted = conn, pool, False

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._conn.fetch(sql, *args)
        if not self.deleted and sql.startswith("INSERT") and not rows:
            await self._pool.execute("DELETE FROM idempotency_keys")
            self.deleted = True
        return rows


async def test_a_key_deleted_while_it_is_claimed_again_is_claimed_afresh(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(
        "INSERT INTO idempotency_keys (user_id, key, order_id, request_hash)"
        " VALUES ('u', 'k', 'first', 'h')"
    )
    async with pool.acquire() as conn:
        racing = _KeyDeletedAfterTheConflict(conn, pool)
        earlier = await claim_idempotency_keys(
            cast(asyncpg.Connection, racing), [KeyClaim("u", "k", "second", "h")]
        )
    assert racing.deleted and earlier == {}
    assert await pool.fetchval("SELECT order_id FROM idempotency_keys") == "second"
