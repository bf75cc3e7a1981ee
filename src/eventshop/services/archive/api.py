"""archive's internal HTTP routes (behind the gateway): admins only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import aiormq
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from eventshop.contracts import Envelope
from eventshop.platform.http import Admin, ApiError, StrictBody, install_conventions, not_found
from eventshop.platform.runtime import ServiceContext
from eventshop.services.archive import replay as replays
from eventshop.services.archive import store
from eventshop.services.archive.domain import EventFilter, InvalidFilterError

#: a service name (its queue is named after it); dots excluded: retry and parking queues are not
#: replay targets
SERVICE_NAME = r"^[A-Za-z0-9_-]{1,200}$"


class ArchivedEnvelope(Envelope):
    """An archived event: its envelope as received, and where it sits in the archive."""

    position: int
    archived_at: datetime


class EventPage(BaseModel):
    events: list[ArchivedEnvelope]
    #: pass as `after` for the next page; null when this page is the last
    next_after: int | None


class ReplayRequest(StrictBody):
    #: the target service: its queue, and only it, receives the events
    service: str = Field(pattern=SERVICE_NAME)
    #: an event type, or a pattern like "product.*" (`*` is one word)
    type: str | None = None
    correlation_id: str | None = None
    aggregate_id: str | None = None
    #: occurred_at >= since
    since: datetime | None = None
    #: occurred_at < until
    until: datetime | None = None
    limit: int = Field(ge=1, le=replays.MAX_REPLAY)
    #: count what would be replayed, send nothing
    dry_run: bool = False


class ReplayOutcome(BaseModel):
    matched: int
    replayed: int


def _filter(
    *,
    event_type: str | None,
    correlation_id: str | None,
    aggregate_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> EventFilter:
    try:
        return EventFilter(
            event_type=event_type,
            correlation_id=correlation_id,
            aggregate_id=aggregate_id,
            since=since,
            until=until,
        )
    except InvalidFilterError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None


def _view(event: store.ArchivedEvent) -> ArchivedEnvelope:
    return ArchivedEnvelope(
        **event.envelope.model_dump(), position=event.position, archived_at=event.archived_at
    )


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="archive")
    install_conventions(app)

    @app.get("/events")
    async def find_events(
        who: Admin,
        event_type: Annotated[str | None, Query(alias="type")] = None,
        correlation_id: str | None = None,
        aggregate_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
        after: Annotated[int, Query(ge=0, description="the next_after of the previous page")] = 0,
    ) -> EventPage:
        """Archived events matching every filter given, in archive order, a page at a time."""
        flt = _filter(
            event_type=event_type,
            correlation_id=correlation_id,
            aggregate_id=aggregate_id,
            since=since,
            until=until,
        )
        async with ctx.pool.acquire() as conn:
            # one more than asked: whether another page exists, without a count
            events = await store.find_events(conn, flt, after=after, limit=limit + 1)
        page = events[:limit]
        return EventPage(
            events=[_view(e) for e in page],
            next_after=page[-1].position if len(events) > limit else None,
        )

    @app.get("/events/{event_id}")
    async def get_event(who: Admin, event_id: uuid.UUID) -> ArchivedEnvelope:
        async with ctx.pool.acquire() as conn:
            event = await store.event_by_id(conn, event_id)
        if event is None:
            raise not_found("event")
        return _view(event)

    @app.post("/replay")
    async def replay(who: Admin, body: ReplayRequest) -> ReplayOutcome:
        """Re-deliver matching events, in archive order, to one service's queue only."""
        flt = _filter(
            event_type=body.type,
            correlation_id=body.correlation_id,
            aggregate_id=body.aggregate_id,
            since=body.since,
            until=body.until,
        )
        publisher, connection = ctx.bus.publisher, ctx.bus.connection
        if publisher is None or connection is None:
            raise ApiError(503, "unavailable", "not connected to the broker")
        try:
            result = await replays.replay(
                pool=ctx.pool,
                publisher=publisher,
                connection=connection,
                target=body.service,
                flt=flt,
                limit=body.limit,
                dry_run=body.dry_run,
            )
        except replays.UnknownQueueError:
            raise not_found(f"queue of service {body.service!r}") from None
        except replays.ReplayError as exc:
            raise ApiError(
                503,
                "unavailable",
                str(exc),
                details=[{"matched": exc.matched, "replayed": exc.replayed}],
            ) from None
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            raise ApiError(503, "unavailable", f"broker unavailable: {exc!r}") from None
        return ReplayOutcome(matched=result.matched, replayed=result.replayed)

    return app
