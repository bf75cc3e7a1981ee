"""PostgresEventStore against the real PostgreSQL: what only this adapter has to show.

The port's contract (appends, concurrency, global order, snapshots, upcasting) runs against
this adapter in test_eventstore_contract.py. Here: the append commits or rolls back with the
caller's outbox and inbox rows; why positions come from a locked counter and not from a
sequence; the migration of a store that was written before it. Nothing is faked: a random
schema per test, real connections, real transactions.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from eventshop.contracts.selfcheck import Ponged
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.db import create_pool, migrate, sql_files
from eventshop.platform.eventstore import (
    MIGRATIONS,
    ConcurrencyError,
    NewEvent,
    PostgresEventStore,
)
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory

pytestmark = pytest.mark.integration

store = PostgresEventStore()


@pytest.fixture
async def schema_pool(make_schema: SchemaFactory) -> tuple[str, asyncpg.Pool]:
    schema, pool = await make_schema("eventstore")
    await migrate(pool, [MIGRATIONS])
    return schema, pool


@pytest.fixture
def pool(schema_pool: tuple[str, asyncpg.Pool]) -> asyncpg.Pool:
    return schema_pool[1]


def stream() -> str:
    return f"thing-{uuid.uuid4().hex[:12]}"


def events(*names: str) -> list[NewEvent]:
    return [NewEvent(name, {"name": name, "n": i}) for i, name in enumerate(names)]


class Boom(Exception):
    pass


async def record_inbox(uow: UnitOfWork, event_id: uuid.UUID) -> None:
    """What the consumer does for the event it handles, in the handler's transaction."""
    await uow.conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)", uow.service, event_id
    )


async def test_the_streams_events_the_outbox_and_the_inbox_commit_as_one(
    pool: asyncpg.Pool,
) -> None:
    kept, dropped = stream(), stream()
    handled, failed = uuid.uuid4(), uuid.uuid4()
    async with UnitOfWork.begin(pool, service="eventstore") as uow:
        await record_inbox(uow, handled)
        await store.append(uow.conn, kept, 0, events("Kept"))
        uow.emit(Ponged(seq=1), aggregate_id=kept)
    with pytest.raises(Boom):
        async with UnitOfWork.begin(pool, service="eventstore") as uow:
            await record_inbox(uow, failed)
            await store.append(uow.conn, dropped, 0, events("Dropped"))
            uow.emit(Ponged(seq=2), aggregate_id=dropped)
            raise Boom
    async with pool.acquire() as conn:
        assert len(await store.load(conn, kept)) == 1
        assert await store.load(conn, dropped) == []
        tx = await conn.fetch(
            "SELECT xmin::text AS tx FROM events WHERE stream_id = $1"
            " UNION ALL SELECT xmin::text FROM outbox"
            " UNION ALL SELECT xmin::text FROM inbox",
            kept,
        )
        assert len(tx) == 3 and len({r["tx"] for r in tx}) == 1  # one transaction wrote them
        assert await conn.fetchval("SELECT array_agg(event_id) FROM inbox") == [handled]


async def test_a_conflicting_append_takes_the_outbox_and_the_inbox_row_down_with_it(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    """The loser of a race writes nothing: its message is not marked handled, so it is retried."""
    schema, pool = schema_pool
    sid = stream()
    wide = await create_pool(settings.database_url, schema, max_size=2)
    try:
        async with wide.acquire() as first, wide.acquire() as second:
            tx1, tx2 = first.transaction(), second.transaction()
            await tx1.start()
            await tx2.start()
            await store.append(first, sid, 0, events("ByFirst"))
            loser = UnitOfWork(conn=second, service="eventstore", correlation_id="c")
            await record_inbox(loser, uuid.uuid4())
            loser.emit(Ponged(seq=3), aggregate_id=sid)
            await loser.flush()
            racing = asyncio.create_task(store.append(second, sid, 0, events("BySecond")))
            await asyncio.sleep(0.05)
            await tx1.commit()
            with pytest.raises(ConcurrencyError, match="a concurrent append won"):
                await racing
            await tx2.rollback()
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 0
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
        assert await pool.fetchval("SELECT count(*) FROM events") == 1
    finally:
        await wide.close()


async def test_with_a_plain_sequence_a_reader_would_skip_an_event_for_ever(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    """Why positions come from a locked counter (docs/adr/0005): with a sequence, positions are
    taken at insert time but become visible at commit time, in another order. A reader that
    reads 2 while 1 is still open moves its position to 2 and never reads 1."""
    schema, pool = schema_pool
    await pool.execute("CREATE TABLE naive_log (position bigserial PRIMARY KEY, what text)")
    wide = await create_pool(settings.database_url, schema, max_size=2)
    try:
        async with wide.acquire() as slow, wide.acquire() as fast:
            async with slow.transaction():
                await slow.execute("INSERT INTO naive_log (what) VALUES ('slow')")  # position 1
                await fast.execute("INSERT INTO naive_log (what) VALUES ('fast')")  # 2, committed
                seen = await pool.fetch("SELECT position FROM naive_log WHERE position > 0")
                reader_at = max(r["position"] for r in seen)
            later = await pool.fetch(
                "SELECT position FROM naive_log WHERE position > $1", reader_at
            )
    finally:
        await wide.close()
    assert reader_at == 2 and later == []  # 'slow' (1) is committed now, and was skipped
    # the store: the second writer can't commit position 2 while 1 is open (the contract's
    # test_a_reader_never_races_past_a_position_not_yet_committed shows the waiting)


async def test_recorded_at_follows_the_global_order(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    """recorded_at is read after the head lock, so time travel by time and by position agree."""
    schema, _ = schema_pool
    wide = await create_pool(settings.database_url, schema, max_size=8)
    try:

        async def writer(i: int) -> None:
            for j in range(10):
                async with wide.acquire() as conn, conn.transaction():
                    await store.append(conn, f"w{i}-{j}", 0, events("A", "B"))

        await asyncio.gather(*(writer(i) for i in range(6)))
        rows = await wide.fetch("SELECT recorded_at FROM events ORDER BY global_position")
    finally:
        await wide.close()
    times = [r["recorded_at"] for r in rows]
    assert len(times) == 120 and times == sorted(times)


async def test_the_migration_carries_a_store_written_before_it(
    make_schema: SchemaFactory,
) -> None:
    """A store of the first layout (positions from a bigserial, with a gap) keeps its events;
    new positions continue after the highest; a writer that bypasses the counter fails."""
    _, pool = await make_schema("eventstore_old")
    (first_name, first_sql), *_ = sql_files(MIGRATIONS)
    assert first_name == "0001_events.sql"
    await pool.execute(first_sql)
    await pool.execute(
        "INSERT INTO schema_migrations (name) VALUES ($1)", f"{MIGRATIONS}:{first_name}"
    )
    await pool.execute(
        "INSERT INTO events (stream_id, version, event_type, payload)"
        " VALUES ('old', 1, 'A', '{}'), ('old', 2, 'B', '{}')"
    )
    await pool.execute("SELECT setval('events_global_position_seq', 7)")  # a rolled-back gap
    await pool.execute(
        "INSERT INTO events (stream_id, version, event_type, payload) VALUES ('old', 3, 'C', '{}')"
    )
    assert await migrate(pool, [MIGRATIONS]) == [
        f"{MIGRATIONS}:0002_global_order_snapshots_projections.sql"
    ]
    async with pool.acquire() as conn:
        assert await store.head(conn) == 8
        assert [e.version for e in await store.load(conn, "old")] == [1, 2, 3]
        (new,) = await store.append(conn, "old", 3, events("D"))
        assert new.global_position == 9
        page = await store.read_all(conn, 0)
        assert [e.global_position for e in page.events] == [1, 2, 8, 9]
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute(
                "INSERT INTO events (stream_id, version, event_type, payload)"
                " VALUES ('bypass', 1, 'X', '{}')"
            )
