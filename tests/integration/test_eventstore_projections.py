"""Projections (catch-up subscriptions, rebuild and swap) against the real PostgreSQL.

Real: a random schema per test, migrated; writers, live subscriptions and rebuilds run
concurrently on their own connections. The projection is a small one defined here (events
counted per type and per stream); orders' own projections are tested in
tests/integration/services/test_orders_eventsourcing.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from eventshop.platform.db import create_pool, migrate
from eventshop.platform.eventstore import MIGRATIONS, NewEvent, PostgresEventStore, RecordedEvent
from eventshop.platform.eventstore.projections import CatchUp, Projection, Tables, positions, quote
from eventshop.platform.eventstore.rebuild import RebuildInProgressError, rebuild
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory

pytestmark = pytest.mark.integration

store = PostgresEventStore()


class TypeCounts(Projection):
    """How many events of each type, and the last position and version seen per stream."""

    name = "type_counts"
    tables = {
        "type_counts": """
            CREATE TABLE IF NOT EXISTS {table} (
                event_type text PRIMARY KEY, n bigint NOT NULL, last_position bigint NOT NULL
            );
        """,
        "stream_heads": """
            CREATE TABLE IF NOT EXISTS {table} (
                stream_id text PRIMARY KEY, version int NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {table}_version ON {table} (version);
        """,
    }

    def __init__(self, *, fail_on: str | None = None, types: Sequence[str] | None = None) -> None:
        self.fail_on = fail_on
        self.event_types = types
        self.applied: list[int] = []

    async def apply(
        self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], tables: Tables
    ) -> None:
        counts = Counter(e.event_type for e in events)
        last = {e.event_type: e.global_position for e in events}
        heads = {e.stream_id: e.version for e in events}
        await conn.execute(
            f"INSERT INTO {quote(tables['type_counts'])} AS t (event_type, n, last_position)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])"
            " ON CONFLICT (event_type) DO UPDATE"
            " SET n = t.n + EXCLUDED.n, last_position = EXCLUDED.last_position",
            list(counts),
            list(counts.values()),
            [last[t] for t in counts],
        )
        await conn.execute(
            f"INSERT INTO {quote(tables['stream_heads'])} AS h (stream_id, version)"
            " SELECT * FROM unnest($1::text[], $2::int[])"
            " ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version",
            list(heads),
            list(heads.values()),
        )
        if self.fail_on in counts:
            raise RuntimeError(f"the projection's bug, on {self.fail_on}")
        self.applied += [e.global_position for e in events]


@pytest.fixture
async def pool(
    make_schema: SchemaFactory, settings: PlatformSettings
) -> AsyncIterator[asyncpg.Pool]:
    schema, small = await make_schema("projections")
    await migrate(small, [MIGRATIONS])
    wide = await create_pool(settings.database_url, schema, max_size=10)
    yield wide
    await wide.close()


async def write(pool: asyncpg.Pool, streams: int, each: int, types: Sequence[str]) -> None:
    """`streams` streams of `each` events, one append per event, types in turn."""
    prefix = uuid.uuid4().hex[:6]
    for version in range(each):
        for s in range(streams):
            async with pool.acquire() as conn, conn.transaction():
                event_type = types[(s + version) % len(types)]
                await store.append(conn, f"{prefix}-{s}", version, [NewEvent(event_type, {"s": s})])


async def table(pool: asyncpg.Pool, name: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await pool.fetch(f"SELECT * FROM {quote(name)} ORDER BY 1")]


async def expected_counts(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    rows = await pool.fetch(
        "SELECT event_type, count(*), max(global_position) FROM events GROUP BY 1 ORDER BY 1"
    )
    return [tuple(r) for r in rows]


async def test_catch_up_applies_every_event_once_and_tracks_its_position(
    pool: asyncpg.Pool,
) -> None:
    projection = TypeCounts()
    live = CatchUp(pool, store, projection, batch=7)
    await live.setup()
    await live.setup()  # idempotent
    await write(pool, 5, 6, ["A", "B", "C"])
    assert await live.catch_up() == 30
    assert projection.applied == list(range(1, 31))
    assert await table(pool, "type_counts") == await expected_counts(pool)
    async with pool.acquire() as conn:
        assert (await positions(conn))["type_counts"] == 30
    assert await live.catch_up() == 0  # nothing new: nothing applied again
    await write(pool, 2, 2, ["D"])
    assert await live.catch_up() == 4
    assert await table(pool, "type_counts") == await expected_counts(pool)


async def test_a_failing_batch_leaves_the_read_model_and_the_position_as_they_were(
    pool: asyncpg.Pool,
) -> None:
    good = CatchUp(pool, store, TypeCounts(), batch=100)
    await good.setup()
    await write(pool, 3, 2, ["A"])
    await good.catch_up()
    before = await table(pool, "type_counts"), await table(pool, "stream_heads")
    await write(pool, 3, 1, ["Poison"])
    broken = CatchUp(pool, store, TypeCounts(fail_on="Poison"), batch=100)
    with pytest.raises(RuntimeError, match="the projection's bug"):
        await broken.step()
    assert (await table(pool, "type_counts"), await table(pool, "stream_heads")) == before
    async with pool.acquire() as conn:
        assert (await positions(conn))["type_counts"] == 6
    assert await good.catch_up() == 3  # fixed code goes on from where the position is


async def test_a_filtered_projection_moves_its_position_past_the_other_types(
    pool: asyncpg.Pool,
) -> None:
    live = CatchUp(pool, store, TypeCounts(types=["A"]), batch=2)
    await live.setup()
    await write(pool, 4, 3, ["A", "B", "C"])
    assert await live.catch_up() == 4
    async with pool.acquire() as conn:
        assert (await positions(conn))["type_counts"] == 12 == await store.head(conn)
    assert [r[:2] for r in await table(pool, "type_counts")] == [("A", 4)]


async def test_subscriptions_in_several_processes_share_the_work(pool: asyncpg.Pool) -> None:
    """Each of three runners (as in three orders processes) skips a turn another holds."""
    projections = [TypeCounts(), TypeCounts(), TypeCounts()]
    runners = [CatchUp(pool, store, p, batch=5) for p in projections]
    await runners[0].setup()
    writing = asyncio.create_task(write(pool, 6, 10, ["A", "B"]))
    while not writing.done():
        await asyncio.gather(*(r.step() for r in runners))
    await writing
    for runner in runners:
        await runner.catch_up()
    applied = sorted(position for p in projections for position in p.applied)
    assert applied == list(range(1, 61))
    assert await table(pool, "type_counts") == await expected_counts(pool)


async def test_rebuild_while_writers_and_the_live_subscription_run_ends_identical(
    pool: asyncpg.Pool,
) -> None:
    projection = TypeCounts()
    live = CatchUp(pool, store, projection, batch=20, poll_s=0.01)
    await live.setup()
    await write(pool, 10, 10, ["A", "B", "C"])
    following = asyncio.create_task(live.run())
    writing = asyncio.create_task(write(pool, 8, 12, ["A", "B", "D"]))
    seen: list[tuple[int, int]] = []
    try:
        report = await rebuild(
            pool, store, projection, batch=13, progress=lambda p, h: seen.append((p, h))
        )
        await writing
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    # after the follower stopped: a catch-up skips a turn another runner holds (as in the test
    # above), so one made while the follower still ran could return with events left unapplied
    await live.catch_up()
    assert report.differences == 0 and report.swapped
    assert report.events >= 100 and report.position >= 100
    assert seen and seen[-1][0] == seen[-1][1] == report.position
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert await table(pool, "type_counts") == await expected_counts(pool)
    async with pool.acquire() as conn:
        assert await positions(conn) == {"type_counts": await store.head(conn)}
        names = await conn.fetch(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename IN ('type_counts', 'stream_heads') ORDER BY 2"
        )
        leftovers = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename LIKE '%\\_\\_rebuild'"
        )
    assert [tuple(r) for r in names] == [
        ("stream_heads", "stream_heads_pkey"),
        ("stream_heads", "stream_heads_version"),
        ("type_counts", "type_counts_pkey"),
    ]
    assert leftovers == 0


async def test_a_rebuild_finds_and_repairs_a_damaged_read_model(pool: asyncpg.Pool) -> None:
    projection = TypeCounts()
    live = CatchUp(pool, store, projection)
    await live.setup()
    await write(pool, 4, 4, ["A", "B"])
    await live.catch_up()
    good = await table(pool, "type_counts")
    await pool.execute("UPDATE type_counts SET n = n + 1 WHERE event_type = 'A'")
    await pool.execute("DELETE FROM stream_heads WHERE version = 4 AND stream_id LIKE '%-0'")
    checked = await rebuild(pool, store, projection, swap=False)
    assert (checked.differences, checked.swapped) == (3, False)  # 2 + 1 rows differ
    assert await table(pool, "type_counts") != good  # a check changes nothing
    repaired = await rebuild(pool, store, projection)
    assert repaired.differences == 3
    assert await table(pool, "type_counts") == good
    assert (await rebuild(pool, store, projection, swap=False)).differences == 0


async def test_one_rebuild_at_a_time(pool: asyncpg.Pool) -> None:
    projection = TypeCounts()
    await write(pool, 2, 2, ["A"])
    async with pool.acquire() as conn:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))",
            "projection:rebuild:type_counts",
        )
        with pytest.raises(RebuildInProgressError, match="already running"):
            await rebuild(pool, store, projection)
        await conn.execute("SELECT pg_advisory_unlock_all()")
    assert (await rebuild(pool, store, projection)).events == 4
