"""The orders event store, read as `eventshop events` reads it: one stream, the global log,
an order's timeline and its state as of a version or a time, the projections' positions.

Every function takes a pool whose connections see the event-sourced service's schema first
(`open_store(dsn)`, or eventshop.platform.db.create_pool(dsn, "orders")), and reads through
the service's own store, so events stored under an old schema version read upcast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from eventshop.ops.jsonable import iso_utc, plain
from eventshop.platform.db import create_pool
from eventshop.platform.eventstore import RecordedEvent
from eventshop.platform.eventstore.projections import positions
from eventshop.services.orders import domain, eventlog
from eventshop.services.orders import store as orders
from eventshop.services.orders.projections import PROJECTIONS


async def open_store(dsn: str, schema: str = "orders", *, max_size: int = 3) -> asyncpg.Pool:
    """A pool on the event store of `schema` (close it when done)."""
    return await create_pool(dsn, schema, min_size=1, max_size=max_size)


def event_json(e: RecordedEvent) -> dict[str, Any]:
    """A recorded event as every `eventshop events ... --json` prints it."""
    return {
        "global_position": e.global_position,
        "stream_id": e.stream_id,
        "version": e.version,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "stored_schema_version": e.stored_schema_version,
        "recorded_at": iso_utc(e.recorded_at),
        "payload": plain(e.payload),
        "metadata": plain(e.metadata),
    }


async def stream_events(
    pool: asyncpg.Pool, stream_id: str, *, from_version: int = 0, to_version: int | None = None
) -> list[RecordedEvent]:
    """One stream's events after `from_version` (up to `to_version`), in version order."""
    async with pool.acquire() as conn:
        return await orders.events.load(conn, stream_id, from_version, to_version=to_version)


@dataclass(frozen=True)
class LogSlice:
    """Events of the global log, in order, and the position to read on from."""

    events: list[RecordedEvent]
    position: int
    head: int

    @property
    def caught_up(self) -> bool:
        """Nothing left between `position` and the head (as the last read saw it)."""
        return self.position >= self.head

    def to_json(self) -> list[dict[str, Any]]:
        return [event_json(e) for e in self.events]


async def log_events(
    pool: asyncpg.Pool,
    *,
    last: int = 20,
    after: int | None = None,
    event_types: Sequence[str] | None = None,
    limit: int = 10_000,
) -> LogSlice:
    """The global log from the position `after` (default: `last` events before the head), up
    to the head or `limit` events, of `event_types` only if given; `position` is where the
    next read starts (`eventshop events tail --follow` reads on from there)."""
    types = list(event_types) if event_types else None
    found: list[RecordedEvent] = []
    async with pool.acquire() as conn:
        head = await orders.events.head(conn)
        position = max(0, head - last) if after is None else after
        while len(found) < limit:
            page = await orders.events.read_all(
                conn, position, limit=min(500, limit - len(found)), event_types=types
            )
            found += page.events
            position, head = page.position, max(head, page.head)
            if page.caught_up:
                break
    return LogSlice(found, position, head)


@dataclass(frozen=True)
class Step:
    """One event of an order's stream and the order right after it."""

    event: RecordedEvent
    status: str
    reason: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            **event_json(self.event),
            "status_after": self.status,
            "reason_after": self.reason,
            "seconds_since_placed": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class OrderHistory:
    """An order's timeline; with a version or a time asked for, the order as it was then
    (`as_of` None: not placed yet at that point)."""

    order_id: str
    steps: list[Step]
    version: int | None = None
    at: datetime | None = None
    as_of: domain.Order | None = None

    def to_json(self) -> dict[str, Any]:
        asked = self.version is not None or self.at is not None
        return {
            "order_id": self.order_id,
            "timeline": [s.to_json() for s in self.steps],
            "as_of_version": self.version,
            "as_of_time": iso_utc(self.at),
            "as_of": order_json(self.as_of) if asked and self.as_of is not None else None,
        }


def order_json(order: domain.Order) -> dict[str, Any]:
    """An order's state as its snapshots keep it, times in UTC."""
    state: dict[str, Any] = plain(eventlog.CODEC.encode(order))
    for key in ("placed_at", "deadline"):
        state[key] = iso_utc(state[key])
    return state


async def order_history(
    pool: asyncpg.Pool,
    order_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
) -> OrderHistory | None:
    """An order's stream with its status after each event, and, with `version` or `at`,
    the order as it was then; None when there is no such order."""
    async with pool.acquire() as conn:
        recorded = await orders.history_of(conn, order_id)
        then = None
        if recorded and (version is not None or at is not None):
            then = await orders.order_as_of(conn, order_id, version=version, at=at)
    if not recorded:
        return None
    start = recorded[0].recorded_at
    steps = [
        Step(
            event=r,
            status=state.status.value,
            reason=None if state.reason is None else str(state.reason),
            seconds=(r.recorded_at - start).total_seconds(),
        )
        for r, (_, state) in zip(
            recorded, domain.timeline(orders.to_domain(r) for r in recorded), strict=True
        )
    ]
    return OrderHistory(order_id, steps, version=version, at=at, as_of=then)


@dataclass(frozen=True)
class ProjectionPosition:
    projection: str
    #: its position in the global log (None: not set up)
    position: int | None
    #: events between it and the head (None: not set up)
    behind: int | None


@dataclass(frozen=True)
class ProjectionPositions:
    head: int
    projections: list[ProjectionPosition]

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "projections": [
                {"projection": p.projection, "position": p.position, "behind": p.behind}
                for p in self.projections
            ],
        }


async def projection_positions(pool: asyncpg.Pool) -> ProjectionPositions:
    """Every projection of orders (and any shadow of a rebuild) and how far behind it is."""
    async with pool.acquire() as conn:
        where, head = await positions(conn), await orders.events.head(conn)
    names = sorted({p.name for p in PROJECTIONS} | set(where))
    return ProjectionPositions(
        head,
        [
            ProjectionPosition(n, where.get(n), None if where.get(n) is None else head - where[n])
            for n in names
        ],
    )
