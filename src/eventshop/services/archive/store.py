"""archive's table: archived_events, append-only, in archive order (`position`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from eventshop.contracts import Envelope
from eventshop.services.archive.domain import ArchivedEvent, EventFilter

COLUMNS = "position, archived_at, envelope"


#: one row per element of the arrays, in array order (WITH ORDINALITY and ORDER BY make the
#: `position`s, drawn from the sequence row by row, follow that order)
INSERT_EVENTS = """
INSERT INTO archived_events (event_id, event_type, schema_version, aggregate_id, correlation_id,
                             causation_id, occurred_at, envelope)
SELECT event_id, event_type, schema_version, aggregate_id, correlation_id,
       causation_id, occurred_at, envelope
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[],
            $6::text[], $7::timestamptz[], $8::jsonb[])
     WITH ORDINALITY AS e (event_id, event_type, schema_version, aggregate_id, correlation_id,
                           causation_id, occurred_at, envelope, nth)
ORDER BY nth
ON CONFLICT (event_id) DO NOTHING
"""


async def archive_events(conn: asyncpg.Connection, envelopes: Sequence[Envelope]) -> int:
    """Keep `envelopes` with one INSERT, their `position`s in the order given; how many were new.

    An event id archived already, or given twice, is kept once (nothing changes for it)."""
    if not envelopes:
        return 0
    status: str = await conn.execute(
        INSERT_EVENTS,
        [e.event_id for e in envelopes],
        [e.event_type for e in envelopes],
        [e.schema_version for e in envelopes],
        [e.aggregate_id for e in envelopes],
        [e.correlation_id for e in envelopes],
        [e.causation_id for e in envelopes],
        [e.occurred_at for e in envelopes],
        # pydantic's own JSON encoder: the same document as orjson.dumps(model_dump(mode="json")),
        # without building the intermediate dicts
        [e.model_dump_json() for e in envelopes],
    )
    return int(status.rpartition(" ")[2])  # "INSERT 0 <rows>"


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
