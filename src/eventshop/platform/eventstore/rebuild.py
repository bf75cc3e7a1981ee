"""Rebuilding a projection beside the live one, and swapping it in (see projections.py's
docstring for the steps, and docs/adr/0005 for why not "truncate and reset in one transaction")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from eventshop.platform.eventstore.port import Page
from eventshop.platform.eventstore.postgres import PostgresEventStore
from eventshop.platform.eventstore.projections import (
    LOCK_KEY,
    SHADOW,
    CatchUp,
    Projection,
    Tables,
    advance,
    create_tables,
    lock_name,
    quote,
)
from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)


class RebuildInProgressError(Exception):
    """Another rebuild of the same projection holds its lock."""


@dataclass(frozen=True)
class RebuildReport:
    projection: str
    #: events applied to the shadow tables (the whole log of the projection's types)
    events: int
    #: the global position both the old and the new tables were at when compared
    position: int
    seconds: float
    #: rows that differ between the live tables and the rebuilt ones at that position
    differences: int
    swapped: bool

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


Progress = Callable[[int, int], None]


async def rebuild(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    projection: Projection,
    *,
    batch: int = 5_000,
    swap: bool = True,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild `projection` from position zero beside the live one, compare, and swap it in.

    `swap=False` only verifies: the shadow is built, compared at one position with the live
    tables and dropped. `progress(position, head)` is called after every batch.
    """
    started = time.perf_counter()
    shadow = projection.shadow_tables()
    shadow_key = f"{projection.name}{SHADOW}"
    async with pool.acquire() as conn:
        locked = await conn.fetchval(
            f"SELECT pg_try_advisory_lock({LOCK_KEY})", lock_name("rebuild", projection)
        )
        if not locked:
            raise RebuildInProgressError(f"a rebuild of {projection.name} is already running")
        try:
            await CatchUp(pool, store, projection).setup()
            async with conn.transaction():
                await _drop(conn, shadow.values())
                await create_tables(conn, projection, shadow)
                await conn.execute(
                    "INSERT INTO projection_positions (projection, position) VALUES ($1, 0)"
                    " ON CONFLICT (projection) DO UPDATE SET position = 0, updated_at = now()",
                    shadow_key,
                )
            applied = 0
            # the bulk, in batches that commit as they go; the next page is read on another
            # connection while this one applies the last (positions up to the head are final)
            async for page in _read_ahead(pool, store, projection, batch):
                async with conn.transaction():
                    if page.events:
                        await projection.apply(conn, page.events, shadow)
                    await conn.execute(
                        "UPDATE projection_positions SET position = $2, updated_at = now()"
                        " WHERE projection = $1",
                        shadow_key,
                        page.position,
                    )
                applied += len(page.events)
                if progress is not None:
                    progress(page.position, page.head)
            # a live projection far behind (never run, say) catches up in batches first, so
            # that the last transaction, which holds the live one, stays short
            await CatchUp(pool, store, projection, batch=batch).catch_up()
            async with conn.transaction():  # the tail, the comparison and the swap: one commit
                applied += await _finish(
                    conn, store, projection, shadow, shadow_key, batch, progress
                )
                position = await conn.fetchval(
                    "SELECT position FROM projection_positions WHERE projection = $1",
                    projection.name,
                )
                differences = await _differences(conn, projection, shadow)
                if swap:  # the live row is at `position` already, as the shadow is
                    await _swap(conn, projection, shadow)
                else:
                    await _drop(conn, shadow.values())
                await conn.execute(
                    "DELETE FROM projection_positions WHERE projection = $1", shadow_key
                )
        finally:
            await conn.execute(
                f"SELECT pg_advisory_unlock({LOCK_KEY})", lock_name("rebuild", projection)
            )
    report = RebuildReport(
        projection=projection.name,
        events=applied,
        position=position,
        seconds=time.perf_counter() - started,
        differences=differences,
        swapped=swap,
    )
    log.info(
        "projection.rebuilt",
        projection=projection.name,
        events=report.events,
        position=report.position,
        seconds=round(report.seconds, 3),
        differences=report.differences,
        swapped=swap,
    )
    return report


async def _read_ahead(
    pool: asyncpg.Pool, store: PostgresEventStore, projection: Projection, batch: int
) -> AsyncIterator[Page]:
    """The log from position zero to the head, a page at a time, one page read ahead."""
    pages: asyncio.Queue[Page | BaseException] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            async with pool.acquire() as conn:
                position = 0
                while True:
                    page = await store.read_all(
                        conn, position, limit=batch, event_types=projection.event_types
                    )
                    await pages.put(page)
                    if page.caught_up:
                        return
                    position = page.position
        except Exception as exc:
            await pages.put(exc)

    reader = asyncio.create_task(read(), name=f"rebuild:{projection.name}:read")
    try:
        while True:
            page = await pages.get()
            if isinstance(page, BaseException):
                raise page
            yield page
            if page.caught_up:
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _finish(
    conn: asyncpg.Connection,
    store: PostgresEventStore,
    projection: Projection,
    shadow: Tables,
    shadow_key: str,
    batch: int,
    progress: Progress | None,
) -> int:
    """Bring the live tables and the shadow to one head, with the live row locked."""
    # waits for a live batch in flight; then the live subscription skips its turns
    await conn.fetchval(
        "SELECT position FROM projection_positions WHERE projection = $1 FOR UPDATE",
        projection.name,
    )
    target = await store.head(conn)
    applied = 0
    for key, tables in ((shadow_key, shadow), (projection.name, projection.live_tables())):
        while True:
            step = await advance(
                conn,
                store,
                projection,
                position_key=key,
                tables=tables,
                batch=batch,
                target=target,
                skip_locked=False,
            )
            if key == shadow_key:
                applied += step.applied
            if step.position >= target:
                break
    if progress is not None:
        progress(target, target)
    return applied


async def _differences(conn: asyncpg.Connection, projection: Projection, shadow: Tables) -> int:
    total = 0
    for table in projection.tables:
        live, new = quote(table), quote(shadow[table])
        total += await conn.fetchval(
            f"SELECT count(*) FROM ((TABLE {live} EXCEPT ALL TABLE {new})"
            f" UNION ALL (TABLE {new} EXCEPT ALL TABLE {live})) AS d"
        )
    return total


async def _swap(conn: asyncpg.Connection, projection: Projection, shadow: Tables) -> None:
    for table in projection.tables:
        await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
        await conn.execute(f"ALTER TABLE {quote(shadow[table])} RENAME TO {quote(table)}")
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = $1",
            table,
        )
        for row in indexes:
            name: str = row["indexname"]
            if name.startswith(shadow[table]):
                renamed = table + name[len(shadow[table]) :]
                await conn.execute(f"ALTER INDEX {quote(name)} RENAME TO {quote(renamed)}")


async def _drop(conn: asyncpg.Connection, tables: Iterable[str]) -> None:
    for table in tables:
        await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
