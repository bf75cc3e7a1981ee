"""Migration 0003 (ADR 0021) on a schema an earlier version left behind, against the real
PostgreSQL: the rows its relay had marked sent move to `outbox_sent` with every value they had;
the unsent ones stay in the outbox, in order, with their errors and backoff; the two partial
indexes on `sent_at` are gone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventshop.platform.bus.outbox import write_outbox
from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate, sql_files
from eventshop.platform.settings import PlatformSettings
from tests.integration.helpers import ping

BEFORE = ("0001_outbox_inbox.sql", "0002_retention_indexes.sql")


@pytest.fixture
async def pool(settings: PlatformSettings) -> AsyncIterator[asyncpg.Pool]:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings.database_url, schema, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_migration_0003_moves_the_marked_rows_and_leaves_the_unsent_ones(
    pool: asyncpg.Pool,
) -> None:
    files = dict(sql_files(PLATFORM_MIGRATIONS))
    envelopes = [ping(i) for i in range(4)]
    async with pool.acquire() as conn:
        # the schema as the version before 0003 left it: migrated to 0002, rows in all states
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name in BEFORE:
            await conn.execute(files[name])
            await conn.execute(
                "INSERT INTO schema_migrations (name) VALUES ($1)", f"{PLATFORM_MIGRATIONS}:{name}"
            )
        async with conn.transaction():
            await write_outbox(conn, envelopes)
        marked = (
            "UPDATE outbox SET sent_at = $2, attempts = $3, last_error = $4 WHERE event_id = $1"
        )
        sent_at = await conn.fetchval("SELECT now() - interval '5 minutes'")
        await conn.execute(marked, envelopes[0].event_id, sent_at, 1, None)
        await conn.execute(marked, envelopes[1].event_id, sent_at, 2, "nack")  # sent at its 2nd
        await conn.execute(
            "UPDATE outbox SET attempts = 1, last_error = 'unroutable',"
            " next_attempt_at = now() + interval '1 s' WHERE event_id = $1",
            envelopes[3].event_id,
        )
        before = {r["event_id"]: dict(r) for r in await conn.fetch("SELECT * FROM outbox")}

    assert await migrate(pool, [PLATFORM_MIGRATIONS]) == [
        f"{PLATFORM_MIGRATIONS}:0003_outbox_sent.sql"
    ]

    moved = {r["event_id"]: dict(r) for r in await pool.fetch("SELECT * FROM outbox_sent")}
    assert set(moved) == {envelopes[0].event_id, envelopes[1].event_id}
    for event_id, row in moved.items():
        was = before[event_id]
        del was["next_attempt_at"]  # meaningless once sent
        assert row == was
    left = await pool.fetch("SELECT * FROM outbox ORDER BY id")
    assert [r["event_id"] for r in left] == [envelopes[2].event_id, envelopes[3].event_id]
    assert [dict(r) for r in left] == [before[e.event_id] for e in envelopes[2:]]
    assert all(r["sent_at"] is None for r in left)  # kept, and never written again
    schema = await pool.fetchval("SELECT current_schema()")
    indexes = {
        r["indexname"]
        for r in await pool.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)
    }
    assert "outbox_sent_sent_at" in indexes
    assert not indexes & {"outbox_unsent", "outbox_sent_at"}
    assert await migrate(pool, [PLATFORM_MIGRATIONS]) == []  # applied once
