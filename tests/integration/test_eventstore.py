"""PostgresEventStore against the real PostgreSQL (a random schema per test, migrated).

Nothing is faked: appends race on real connections, and they commit or roll back with the
caller's transaction together with real outbox rows.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from eventshop.contracts.selfcheck import Ponged
from eventshop.platform.db import create_pool, migrate
from eventshop.platform.eventstore import (
    MIGRATIONS,
    ConcurrencyError,
    NewEvent,
    PostgresEventStore,
)
from eventshop.platform.settings import PlatformSettings
from eventshop.platform.uow import UnitOfWork
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


async def test_append_then_load_in_order(pool: asyncpg.Pool) -> None:
    sid = stream()
    async with pool.acquire() as conn:
        first = await store.append(
            conn,
            sid,
            0,
            events("Created", "Renamed"),
            metadata={"correlation_id": "c-1", "causation_id": "e-0"},
        )
        second = await store.append(conn, sid, 2, [NewEvent("Closed", {"why": "done"}, 3)])
        loaded = await store.load(conn, sid)
        assert [r.version for r in first + second] == [1, 2, 3]
        assert loaded == first + second
        assert [(r.event_type, r.payload) for r in loaded] == [
            ("Created", {"name": "Created", "n": 0}),
            ("Renamed", {"name": "Renamed", "n": 1}),
            ("Closed", {"why": "done"}),
        ]
        assert loaded[2].schema_version == 3
        assert (loaded[0].correlation_id, loaded[0].causation_id) == ("c-1", "e-0")
        assert loaded[2].metadata == {}
        positions = [r.global_position for r in loaded]
        assert positions == sorted(positions) and len(set(positions)) == 3
        assert [r.version for r in await store.load(conn, sid, from_version=2)] == [3]
        assert await store.load(conn, sid, from_version=3) == []
        assert await store.load(conn, stream()) == []
        assert await store.version_of(conn, sid) == 3


async def test_streams_are_independent_and_share_one_global_order(pool: asyncpg.Pool) -> None:
    a, b = stream(), stream()
    async with pool.acquire() as conn:
        ra = await store.append(conn, a, 0, events("A1"))
        rb = await store.append(conn, b, 0, events("B1", "B2"))
        ra2 = await store.append(conn, a, 1, events("A2"))
    assert [r.version for r in ra + rb + ra2] == [1, 1, 2, 2]
    positions = [r.global_position for r in ra + rb + ra2]
    assert positions == sorted(positions)


@pytest.mark.parametrize("stale", [0, 1, 3, 7])
async def test_a_stale_expected_version_is_a_concurrency_error(
    pool: asyncpg.Pool, stale: int
) -> None:
    sid = stream()
    async with pool.acquire() as conn:
        await store.append(conn, sid, 0, events("One", "Two"))
        with pytest.raises(ConcurrencyError, match=f"no longer at version {stale}") as caught:
            await store.append(conn, sid, stale, events("Three"))
        assert caught.value.stream_id == sid
        assert await store.version_of(conn, sid) == 2  # nothing was written, no gap either


async def test_two_concurrent_appenders_one_wins(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    sid = stream()
    pool = await create_pool(settings.database_url, schema_pool[0], max_size=2)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            tx1, tx2 = first.transaction(), second.transaction()
            await tx1.start()
            await tx2.start()
            await store.append(first, sid, 0, events("ByFirst"))
            # the second writer read the same version; its insert waits on the first's row
            racing = asyncio.create_task(store.append(second, sid, 0, events("BySecond")))
            await asyncio.sleep(0.05)
            assert not racing.done()
            await tx1.commit()
            with pytest.raises(ConcurrencyError, match="a concurrent append won"):
                await racing
            await tx2.rollback()
        async with pool.acquire() as conn:
            assert [r.event_type for r in await store.load(conn, sid)] == ["ByFirst"]
    finally:
        await pool.close()


async def test_many_concurrent_appenders_exactly_one_wins(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    sid = stream()
    pool = await create_pool(settings.database_url, schema_pool[0], max_size=10)
    try:

        async def append(i: int) -> bool:
            async with pool.acquire() as conn, conn.transaction():
                try:
                    await store.append(conn, sid, 0, events(f"By{i}"))
                except ConcurrencyError:
                    return False
                return True

        outcomes = await asyncio.gather(*(append(i) for i in range(10)))
        assert outcomes.count(True) == 1
        async with pool.acquire() as conn:
            assert len(await store.load(conn, sid)) == 1
    finally:
        await pool.close()


class Boom(Exception):
    pass


async def test_append_commits_and_rolls_back_with_the_callers_outbox(pool: asyncpg.Pool) -> None:
    kept, dropped = stream(), stream()
    async with UnitOfWork.begin(pool, service="eventstore") as uow:
        await store.append(uow.conn, kept, 0, events("Kept"))
        uow.emit(Ponged(seq=1), aggregate_id=kept)
    with pytest.raises(Boom):
        async with UnitOfWork.begin(pool, service="eventstore") as uow:
            await store.append(uow.conn, dropped, 0, events("Dropped"))
            uow.emit(Ponged(seq=2), aggregate_id=dropped)
            raise Boom
    async with pool.acquire() as conn:
        assert len(await store.load(conn, kept)) == 1
        assert await store.load(conn, dropped) == []
        aggregates = [
            r["aggregate_id"] for r in await conn.fetch("SELECT aggregate_id FROM outbox")
        ]
    assert aggregates == [kept]


async def test_a_negative_expected_version_is_a_programming_error(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ValueError):
            await store.append(conn, stream(), -1, events("X"))
        assert await store.append(conn, stream(), 0, []) == []
