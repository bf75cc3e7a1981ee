"""Projections: read models fed from the global log by a catch-up subscription.

A projection names its tables (as DDL templates, `{table}` standing for the table's name) and
applies a batch of recorded events to them. `CatchUp` feeds it: in ONE transaction it locks the
projection's row in `projection_positions`, reads the next events after that position, applies
them and moves the position. A crash anywhere rolls the batch back with its position, so every
event is applied exactly once, in global order. Several processes may run the same projection:
the row is taken FOR UPDATE SKIP LOCKED, so one advances it and the others skip their turn.

Rules for a projection, so that a rebuild ends identical to the live one:
- it is a function of the events only: no now(), no random ids, no reads of other tables than
  its own (a time in a read model is the `recorded_at` of the event that set it);
- its tables' index names start with `{table}` (the swap renames them with the table).

Rebuild (rebuild.py): into shadow tables (`<table>__rebuild`) with a position of their own, in
batches that commit as they go (a progress bar can follow it; the next page is read on a second
connection while one is applied), while the live tables keep serving and the live subscription
keeps advancing. Once the shadow has caught up, one short transaction locks the live
projection's row (the live subscription skips its turns), brings both the live and the shadow
tables to the same head, compares them row for row, and swaps the shadow in (drop live, rename
shadow). Readers see the old tables until that commit and the new ones after; they never see a
half-built read model. docs/adr/0005 says why this and not "truncate and reset in one
transaction".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from eventshop.platform.eventstore.port import Page, RecordedEvent
from eventshop.platform.eventstore.postgres import PostgresEventStore
from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

#: logical table name -> the physical one to write (the live table or its shadow)
Tables = Mapping[str, str]
SHADOW = "__rebuild"
# advisory locks are database-wide: the key names the schema too
LOCK_KEY = "hashtextextended(current_schema() || ':' || $1, 0)"


class Projection:
    """A read model fed by events; subclass and fill in the four members."""

    #: unique in its schema; the key of its row in projection_positions
    name: str = ""
    #: table -> DDL template; `{table}` is replaced by the table's physical name
    tables: Mapping[str, str] = {}
    #: the event types it reads (None: all); the others are skipped in the database
    event_types: Sequence[str] | None = None

    async def apply(
        self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], tables: Tables
    ) -> None:
        """Apply a batch of events (in global order) to `tables`, in `conn`'s transaction."""
        raise NotImplementedError

    def live_tables(self) -> dict[str, str]:
        return {t: t for t in self.tables}

    def shadow_tables(self) -> dict[str, str]:
        return {t: f"{t}{SHADOW}" for t in self.tables}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_tables(conn: asyncpg.Connection, projection: Projection, tables: Tables) -> None:
    for logical, ddl in projection.tables.items():
        await conn.execute(ddl.replace("{table}", tables[logical]))


@dataclass(frozen=True)
class Step:
    """One batch of a catch-up: how many events it applied, and where it left the projection."""

    applied: int
    position: int
    head: int
    #: False when another process holds the projection this turn
    took_turn: bool = True

    @property
    def caught_up(self) -> bool:
        return self.position >= self.head


async def _read_until(
    store: PostgresEventStore,
    conn: asyncpg.Connection,
    after: int,
    target: int | None,
    limit: int,
    event_types: Sequence[str] | None,
) -> Page:
    """A page of the log after `after`, cut at `target` (a position) if given."""
    page = await store.read_all(conn, after, limit=limit, event_types=event_types)
    if target is None or page.position <= target:
        return page
    kept = [e for e in page.events if e.global_position <= target]
    return Page(kept, target, target)


async def advance(
    conn: asyncpg.Connection,
    store: PostgresEventStore,
    projection: Projection,
    *,
    position_key: str,
    tables: Tables,
    batch: int,
    target: int | None = None,
    skip_locked: bool = True,
) -> Step:
    """One batch: lock the position row, read after it, apply, move it; in `conn`'s transaction."""
    lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
    position = await conn.fetchval(
        f"SELECT position FROM projection_positions WHERE projection = $1 {lock}", position_key
    )
    if position is None:
        exists = await conn.fetchval(
            "SELECT 1 FROM projection_positions WHERE projection = $1", position_key
        )
        if exists is None:
            raise LookupError(f"projection {position_key!r} is not set up")
        return Step(0, 0, 0, took_turn=False)
    page = await _read_until(store, conn, position, target, batch, projection.event_types)
    if page.events:
        await projection.apply(conn, page.events, tables)
    if page.position != position:
        await conn.execute(
            "UPDATE projection_positions SET position = $2, updated_at = now()"
            " WHERE projection = $1",
            position_key,
            page.position,
        )
    return Step(len(page.events), page.position, page.head)


class CatchUp:
    """The live subscription of one projection: catches up, then follows the log."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: PostgresEventStore,
        projection: Projection,
        *,
        batch: int = 1_000,
        poll_s: float = 0.2,
    ) -> None:
        self.pool = pool
        self.store = store
        self.projection = projection
        self.batch = batch
        self.poll_s = poll_s

    async def setup(self) -> None:
        """Create the live tables and the position row if missing (idempotent)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"SELECT pg_advisory_xact_lock({LOCK_KEY})", lock_name("setup", self.projection)
            )
            await create_tables(conn, self.projection, self.projection.live_tables())
            await conn.execute(
                "INSERT INTO projection_positions (projection) VALUES ($1)"
                " ON CONFLICT (projection) DO NOTHING",
                self.projection.name,
            )

    async def step(self) -> Step:
        async with self.pool.acquire() as conn:
            # a cheap look first: an idle projection takes no lock and opens no transaction
            row = await conn.fetchrow(
                "SELECT p.position, h.position AS head FROM projection_positions p,"
                " event_log_head h WHERE p.projection = $1",
                self.projection.name,
            )
            if row is None:
                raise LookupError(f"projection {self.projection.name!r} is not set up")
            if row["position"] >= row["head"]:
                return Step(0, row["position"], row["head"])
            async with conn.transaction():
                return await advance(
                    conn,
                    self.store,
                    self.projection,
                    position_key=self.projection.name,
                    tables=self.projection.live_tables(),
                    batch=self.batch,
                )

    async def catch_up(self) -> int:
        """Apply batches until the projection is at the head; how many events it applied."""
        applied = 0
        while True:
            step = await self.step()
            applied += step.applied
            if step.caught_up or not step.took_turn:
                return applied

    async def run(self) -> None:
        """Follow the log until cancelled; a failing batch is logged and tried again."""
        await self._until_set_up()
        failures = 0
        while True:
            try:
                step = await self.step()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning(
                    "projection.batch_failed",
                    projection=self.projection.name,
                    error=repr(exc),
                    failures=failures,
                )
                await asyncio.sleep(min(self.poll_s * 2**failures, 10.0))
                continue
            if step.caught_up or not step.took_turn:
                await asyncio.sleep(self.poll_s)

    async def _until_set_up(self) -> None:
        delay = self.poll_s
        while True:
            try:
                await self.setup()
                return
            except Exception as exc:
                log.warning(
                    "projection.setup_failed", projection=self.projection.name, error=repr(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def start_projections(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    projections: Sequence[Projection],
    *,
    batch: int = 1_000,
    poll_s: float = 0.2,
) -> Callable[[], Awaitable[None]]:
    """Run each projection's live subscription in the background; returns the stopper."""
    tasks = [
        asyncio.create_task(
            CatchUp(pool, store, p, batch=batch, poll_s=poll_s).run(), name=f"projection:{p.name}"
        )
        for p in projections
    ]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return stop


def lock_name(what: str, projection: Projection) -> str:
    return f"projection:{what}:{projection.name}"


async def positions(conn: asyncpg.Connection) -> dict[str, int]:
    """Every projection's position (shadows of a rebuild included)."""
    rows = await conn.fetch("SELECT projection, position FROM projection_positions")
    return {r["projection"]: r["position"] for r in rows}
