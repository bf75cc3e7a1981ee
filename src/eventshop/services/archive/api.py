"""archive's internal HTTP routes (behind the gateway): admins only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from eventshop.contracts import Envelope
from eventshop.platform.http import PG_BIGINT_MAX, Admin, ApiError, IsoDatetime, StrictBody
from eventshop.platform.service import Context
from eventshop.services.archive import handlers
from eventshop.services.archive.adapters import MAX_REPLAY
from eventshop.services.archive.domain import ArchivedEvent, EventFilter, InvalidFilterError

router = APIRouter()

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
    limit: int = Field(ge=1, le=MAX_REPLAY)
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


def _view(event: ArchivedEvent) -> ArchivedEnvelope:
    return ArchivedEnvelope(
        **event.envelope.model_dump(), position=event.position, archived_at=event.archived_at
    )


@router.get("/events")
async def find_events(
    ctx: Context,
    who: Admin,
    event_type: Annotated[str | None, Query(alias="type")] = None,
    correlation_id: str | None = None,
    aggregate_id: str | None = None,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    after: Annotated[
        int, Query(ge=0, le=PG_BIGINT_MAX, description="the next_after of the previous page")
    ] = 0,
) -> EventPage:
    """Archived events matching every filter given, in archive order, a page at a time."""
    flt = _filter(
        event_type=event_type,
        correlation_id=correlation_id,
        aggregate_id=aggregate_id,
        since=since,
        until=until,
    )
    page, next_after = await handlers.find_events(ctx, flt, after=after, limit=limit)
    return EventPage(events=[_view(e) for e in page], next_after=next_after)


@router.get("/events/{event_id}")
async def get_event(ctx: Context, who: Admin, event_id: uuid.UUID) -> ArchivedEnvelope:
    return _view(await handlers.event_by_id(ctx, event_id))


@router.post("/replay")
async def replay(ctx: Context, who: Admin, body: ReplayRequest) -> ReplayOutcome:
    """Re-deliver matching events, in archive order, to one service's queue only."""
    flt = _filter(
        event_type=body.type,
        correlation_id=body.correlation_id,
        aggregate_id=body.aggregate_id,
        since=body.since,
        until=body.until,
    )
    result = await handlers.replay_events(
        ctx, target=body.service, flt=flt, limit=body.limit, dry_run=body.dry_run
    )
    return ReplayOutcome(matched=result.matched, replayed=result.replayed)
