"""archive's use cases: every event type lands in `archive_events`, a window at a time; the
admin's queries of the archive and its replays to one service's queue."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiormq

from eventshop.platform.bus import Delivery
from eventshop.platform.http import ApiError, not_found
from eventshop.services.archive import adapters, store
from eventshop.services.archive.domain import ArchivedEvent, EventFilter

if TYPE_CHECKING:
    from eventshop.services.archive.service import Context


async def archive_events(ctx: Context, events: Sequence[Delivery]) -> None:
    """Keep a window's events, in delivery order, with one INSERT (a `Batch` handler).

    They share one transaction, so the first event's connection serves them all. ON CONFLICT
    makes it idempotent beyond the inbox too: the same event archived by two archive consumers
    (or re-read after an inbox cleanup) is kept once.
    """
    await store.archive_events(events[0][0].conn, [envelope for _, envelope, _ in events])


async def find_events(
    ctx: Context, flt: EventFilter, *, after: int, limit: int
) -> tuple[list[ArchivedEvent], int | None]:
    """A page of archived events matching `flt` after position `after`, and where the next
    page starts (None when this one is the last)."""
    async with ctx.pool.acquire() as conn:
        # one more than asked: whether another page exists, without a count
        events = await store.find_events(conn, flt, after=after, limit=limit + 1)
    page = events[:limit]
    return page, page[-1].position if len(events) > limit else None


async def event_by_id(ctx: Context, event_id: uuid.UUID) -> ArchivedEvent:
    async with ctx.pool.acquire() as conn:
        event = await store.event_by_id(conn, event_id)
    if event is None:
        raise not_found("event")
    return event


async def replay_events(
    ctx: Context, *, target: str, flt: EventFilter, limit: int, dry_run: bool
) -> adapters.ReplayResult:
    """Re-deliver matching events, in archive order, to one service's queue only."""
    publisher, connection = ctx.bus.publisher, ctx.bus.connection
    if publisher is None or connection is None:
        raise ApiError(503, "unavailable", "not connected to the broker")
    try:
        return await adapters.replay(
            pool=ctx.pool,
            publisher=publisher,
            connection=connection,
            target=target,
            flt=flt,
            limit=limit,
            dry_run=dry_run,
        )
    except adapters.UnknownQueueError:
        raise not_found(f"queue of service {target!r}") from None
    except adapters.ReplayError as exc:
        raise ApiError(
            503,
            "unavailable",
            str(exc),
            details=[{"matched": exc.matched, "replayed": exc.replayed}],
        ) from None
    except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
        raise ApiError(503, "unavailable", f"broker unavailable: {exc!r}") from None
