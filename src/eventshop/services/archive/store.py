"""archive's table: archived_events, append-only, in archive order (`position`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from eventshop.contracts import Envelope
from eventshop.services.archive.domain import EventFilter

COLUMNS = "position, archived_at, envelope"


@dataclass(frozen=True)
class ArchivedEvent:
    position: int
    archived_at: datetime
    envelope: Envelope


async def archive_event(conn: asyncpg.Connection, envelope: Envelope) -> bool:
    """Keep `envelope`; False if that event id is archived already (nothing changes)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO archived_events (event_id, event_type, schema_version, aggregate_id,
                                     correlation_id, causation_id, occurred_at, envelope)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
        ON CONFLICT (event_id) DO NOTHING RETURNING true
        """,
        envelope.event_id,
        envelope.event_type,
        envelope.schema_version,
        envelope.aggregate_id,
        envelope.correlation_id,
        envelope.causation_id,
        envelope.occurred_at,
        orjson.dumps(envelope.model_dump(mode="json")).decode(),
    )
    return bool(inserted)


def _where(flt: EventFilter, after: int) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter, after a position, and its arguments ($1, $2, ...).

    Only these constant fragments become SQL text; every value given is a bind parameter.
    """
    clauses = ["position > $1"]
    args: list[Any] = [after]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("?", f"${len(args)}"))

    if flt.type_regex is not None:
        add("event_type ~ ?", flt.type_regex)
    elif flt.event_type is not None:
        add("event_type = ?", flt.event_type)
    if flt.correlation_id is not None:
        add("correlation_id = ?", flt.correlation_id)
    if flt.aggregate_id is not None:
        add("aggregate_id = ?", flt.aggregate_id)
    if flt.since is not None:
        add("occurred_at >= ?", flt.since)
    if flt.until is not None:
        add("occurred_at < ?", flt.until)
    return " AND ".join(clauses), args


async def find_events(
    conn: asyncpg.Connection, flt: EventFilter, *, after: int = 0, limit: int = 100
) -> list[ArchivedEvent]:
    """Up to `limit` matching events after position `after`, in archive order."""
    where, args = _where(flt, after)
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM archived_events WHERE {where}"
        f" ORDER BY position LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [_event(r) for r in rows]


async def count_events(conn: asyncpg.Connection, flt: EventFilter, *, limit: int) -> int:
    """How many events match, counting no further than `limit`."""
    where, args = _where(flt, 0)
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM archived_events WHERE {where}"
        f" LIMIT ${len(args) + 1}) AS matching",
        *args,
        limit,
    )
    return count


async def event_by_id(conn: asyncpg.Connection, event_id: uuid.UUID) -> ArchivedEvent | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM archived_events WHERE event_id = $1", event_id
    )
    return None if row is None else _event(row)


def _event(row: asyncpg.Record) -> ArchivedEvent:
    return ArchivedEvent(
        position=row["position"],
        archived_at=row["archived_at"],
        envelope=Envelope.model_validate(orjson.loads(row["envelope"])),
    )
