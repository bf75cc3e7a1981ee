"""PostgresEventStore: the event store in the `events` table of the caller's schema (JSONB).

It takes the caller's connection rather than a pool because the append is one part of a
larger transaction (read model, outbox, inbox): the store never begins or commits anything.

Optimistic concurrency: UNIQUE (stream_id, version), plus a version check in the append itself
(an expected version *ahead* of the stream would otherwise leave a gap). Global order: the
append takes the row lock of the one-row `event_log_head` and hands out positions from it, so
positions are contiguous and commit in order (docs/adr/0005-event-store-global-order.md): a
reader by global position can never race past a position that commits later. The price is that
appends to one store take turns from their append to their commit, so a writer should append
late in its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from eventshop.platform.eventstore.port import (
    ConcurrencyError,
    NewEvent,
    Page,
    RecordedEvent,
    Snapshot,
    StreamAppend,
    check_appends,
)
from eventshop.platform.eventstore.upcasting import Upcasters

STREAM_VERSION_CONSTRAINT = "events_stream_version_key"

# The version check sits in the head's UPDATE: a stale writer fails without taking the lock.
# Two writers that both pass it (they read the stream at the same moment) queue on the head
# row; the second then inserts a version that exists and gets the unique violation.
# clock_timestamp() is read after the lock, so recorded_at follows the global order too.
APPEND = """
WITH head AS (
    UPDATE event_log_head SET position = position + $7
     WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $2
    RETURNING position - $7 AS base
)
INSERT INTO events (global_position, stream_id, version, event_type, schema_version, payload,
                    metadata, recorded_at)
SELECT head.base + e.ord, $1, $2 + e.ord, e.event_type, e.schema_version, e.payload,
       e.metadata, clock_timestamp()
FROM head,
     unnest($3::text[], $4::int[], $5::jsonb[], $6::jsonb[])
         WITH ORDINALITY AS e(event_type, schema_version, payload, metadata, ord)
RETURNING global_position, version, recorded_at
"""

# Several streams at once, as APPEND does one: every stream's version checked in the head's
# UPDATE (any one moved: nothing is written), positions handed out in the order of the arrays.
APPEND_MANY = """
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::int[]) AS w(stream_id, expected)
), head AS (
    UPDATE event_log_head SET position = position + $9
     WHERE NOT EXISTS (
        SELECT 1 FROM wanted w
         WHERE (SELECT coalesce(max(version), 0) FROM events e WHERE e.stream_id = w.stream_id)
               <> w.expected)
    RETURNING position - $9 AS base
)
INSERT INTO events (global_position, stream_id, version, event_type, schema_version, payload,
                    metadata, recorded_at)
SELECT head.base + e.ord, e.stream_id, e.version, e.event_type, e.schema_version, e.payload,
       e.metadata, clock_timestamp()
FROM head,
     unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[])
         WITH ORDINALITY AS e(stream_id, version, event_type, schema_version, payload, metadata,
                              ord)
RETURNING global_position, stream_id, version, recorded_at
"""

COLUMNS = (
    "global_position, stream_id, version, event_type, schema_version, payload, metadata,"
    " recorded_at"
)

# The head and the events in one statement, so in one snapshot: every position up to the
# head it reads is committed and visible to it (positions commit in order).
READ_ALL = f"""
SELECT h.position AS head, e.*
FROM event_log_head h
LEFT JOIN LATERAL (
    SELECT {COLUMNS} FROM events
    WHERE global_position > $1 AND global_position <= h.position
    ORDER BY global_position
    LIMIT $2
) e ON true
"""

READ_ALL_OF_TYPES = f"""
SELECT h.position AS head, e.*
FROM event_log_head h
LEFT JOIN LATERAL (
    SELECT {COLUMNS} FROM events
    WHERE global_position > $1 AND global_position <= h.position AND event_type = ANY($3)
    ORDER BY global_position
    LIMIT $2
) e ON true
"""

SAVE_SNAPSHOT = """
INSERT INTO snapshots (stream_id, version, schema_version, state, taken_at)
VALUES ($1, $2, $3, $4::jsonb, now())
ON CONFLICT (stream_id) DO UPDATE
   SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
       state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
 WHERE snapshots.version <= EXCLUDED.version
"""


class PostgresEventStore:
    """Append to and read streams; stateless, so one instance serves every connection."""

    def __init__(self, upcasters: Upcasters | None = None) -> None:
        self.upcasters = upcasters if upcasters is not None else Upcasters()

    async def append(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append `events` after `expected_version` (0 for a new stream), in `conn`'s transaction.

        Raises ConcurrencyError if the stream is not at `expected_version`. When a concurrent
        append won the race the unique violation has aborted the caller's transaction
        (PostgreSQL semantics): the caller rolls back, which is what a retried message or a
        failed request does anyway.
        """
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if not events:
            return []
        base_meta = dict(metadata or {})
        metas = [base_meta if e.metadata is None else {**base_meta, **e.metadata} for e in events]
        shared = _dumps(base_meta)
        meta_json = [
            shared if e.metadata is None else _dumps(m) for e, m in zip(events, metas, strict=True)
        ]
        try:
            rows = await conn.fetch(
                APPEND,
                stream_id,
                expected_version,
                [e.event_type for e in events],
                [e.schema_version for e in events],
                [_dumps(e.payload) for e in events],
                meta_json,
                len(events),
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != STREAM_VERSION_CONSTRAINT:
                raise
            raise ConcurrencyError(stream_id, expected_version, "a concurrent append won") from exc
        if not rows:
            raise ConcurrencyError(stream_id, expected_version, "the stream is at another version")
        by_version = {r["version"]: r for r in rows}
        return [
            RecordedEvent(
                global_position=by_version[expected_version + i]["global_position"],
                stream_id=stream_id,
                version=expected_version + i,
                event_type=e.event_type,
                schema_version=e.schema_version,
                payload=dict(e.payload),
                recorded_at=by_version[expected_version + i]["recorded_at"],
                metadata=meta,
            )
            for i, (e, meta) in enumerate(zip(events, metas, strict=True), start=1)
        ]

    async def append_many(
        self, conn: asyncpg.Connection, appends: Sequence[StreamAppend]
    ) -> list[RecordedEvent]:
        """`append` for several streams in one statement (see the port); [] for nothing."""
        check_appends(appends)
        planned: list[tuple[StreamAppend, int, NewEvent, dict[str, Any], str]] = []
        for a in appends:
            base_meta = dict(a.metadata or {})
            shared = _dumps(base_meta)
            for i, e in enumerate(a.events, start=1):
                meta = base_meta if e.metadata is None else {**base_meta, **e.metadata}
                planned.append(
                    (
                        a,
                        a.expected_version + i,
                        e,
                        meta,
                        shared if e.metadata is None else _dumps(meta),
                    )
                )
        if not planned:
            return []
        try:
            rows = await conn.fetch(
                APPEND_MANY,
                [a.stream_id for a in appends],
                [a.expected_version for a in appends],
                [a.stream_id for a, *_ in planned],
                [version for _, version, *_ in planned],
                [e.event_type for _, _, e, *_ in planned],
                [e.schema_version for _, _, e, *_ in planned],
                [_dumps(e.payload) for _, _, e, *_ in planned],
                [meta_json for *_, meta_json in planned],
                len(planned),
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != STREAM_VERSION_CONSTRAINT:
                raise
            first = appends[0]
            raise ConcurrencyError(
                first.stream_id, first.expected_version, "a concurrent append won (one of many)"
            ) from exc
        if not rows:
            first = appends[0]
            raise ConcurrencyError(
                first.stream_id,
                first.expected_version,
                "a stream of the batch is at another version",
            )
        at = {(r["stream_id"], r["version"]): r for r in rows}
        return [
            RecordedEvent(
                global_position=at[(a.stream_id, version)]["global_position"],
                stream_id=a.stream_id,
                version=version,
                event_type=e.event_type,
                schema_version=e.schema_version,
                payload=dict(e.payload),
                recorded_at=at[(a.stream_id, version)]["recorded_at"],
                metadata=meta,
            )
            for a, version, e, meta, _ in planned
        ]

    async def load_many(
        self, conn: asyncpg.Connection, stream_ids: Sequence[str]
    ) -> dict[str, list[RecordedEvent]]:
        """Whole streams in one round trip (see the port)."""
        found: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        if not found:
            return found
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1::text[])"
            " ORDER BY stream_id, version",
            list(found),
        )
        for r in rows:
            found[r["stream_id"]].append(self._recorded(r))
        return found

    async def load(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        from_version: int = 0,
        *,
        to_version: int | None = None,
        until: datetime | None = None,
    ) -> list[RecordedEvent]:
        """The events of `stream_id` after `from_version`, in version order ([] if none).

        `to_version` stops at that version, `until` at the last event recorded at or before
        that time: the stream as it was then (time travel).
        """
        sql = f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"
        args: list[Any] = [stream_id, from_version]
        if to_version is not None:
            args.append(to_version)
            sql += f" AND version <= ${len(args)}"
        if until is not None:
            args.append(until)
            sql += f" AND recorded_at <= ${len(args)}"
        rows = await conn.fetch(sql + " ORDER BY version", *args)
        return [self._recorded(r) for r in rows]

    async def version_of(self, conn: asyncpg.Connection, stream_id: str) -> int:
        version: int = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return version

    async def head(self, conn: asyncpg.Connection) -> int:
        position: int = await conn.fetchval("SELECT position FROM event_log_head")
        return position

    async def take_append_turn(self, conn: asyncpg.Connection) -> None:
        """Take, for the rest of the transaction, the lock every append takes (the head row).

        A writer that locks several aggregates' rows and then appends to each (orders' timeout
        scan) takes it first: otherwise it may hold an aggregate's row that an appender holding
        this lock waits for, while it waits for this lock itself (a deadlock, seen under load).
        """
        await conn.execute("SELECT 1 FROM event_log_head FOR UPDATE")

    async def read_all(
        self,
        conn: asyncpg.Connection,
        after: int = 0,
        *,
        limit: int = 1_000,
        event_types: Sequence[str] | None = None,
    ) -> Page:
        """Up to `limit` events after global position `after`, in global order.

        No event is ever skipped: positions up to the head this read saw are all committed,
        and the next one to commit is head + 1 (docs/adr/0005).
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if event_types is None:
            rows = await conn.fetch(READ_ALL, after, limit)
        else:
            rows = await conn.fetch(READ_ALL_OF_TYPES, after, limit, list(event_types))
        head: int = rows[0]["head"]
        metadata: dict[str, dict[str, Any]] = {}  # the events of one append share theirs
        events = [self._recorded(r, metadata) for r in rows if r["global_position"] is not None]
        # a full page stops at its last event; a short one has seen everything up to the head
        position = events[-1].global_position if len(events) == limit else max(head, after)
        return Page(events, position, head)

    async def save_snapshot(self, conn: asyncpg.Connection, snapshot: Snapshot) -> None:
        await conn.execute(
            SAVE_SNAPSHOT,
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            _dumps(snapshot.state),
        )

    async def load_snapshot(self, conn: asyncpg.Connection, stream_id: str) -> Snapshot | None:
        row = await conn.fetchrow(
            "SELECT version, schema_version, state, taken_at FROM snapshots WHERE stream_id = $1",
            stream_id,
        )
        if row is None:
            return None
        return Snapshot(
            stream_id=stream_id,
            version=row["version"],
            schema_version=row["schema_version"],
            state=orjson.loads(row["state"]),
            taken_at=row["taken_at"],
        )

    def _recorded(
        self, r: asyncpg.Record, metadata: dict[str, dict[str, Any]] | None = None
    ) -> RecordedEvent:
        event_type: str = r["event_type"]
        raw_meta: str = r["metadata"]
        if metadata is None:
            meta = orjson.loads(raw_meta)
        elif (meta := metadata.get(raw_meta)) is None:
            meta = metadata[raw_meta] = orjson.loads(raw_meta)
        else:
            meta = dict(meta)  # each event its own dict, as without the cache
        stored: int = r["schema_version"]
        version, payload = self.upcasters.upcast(event_type, stored, orjson.loads(r["payload"]))
        return RecordedEvent(
            global_position=r["global_position"],
            stream_id=r["stream_id"],
            version=r["version"],
            event_type=event_type,
            schema_version=version,
            payload=payload,
            recorded_at=r["recorded_at"],
            metadata=meta,
            stored_schema_version=stored if version != stored else None,
        )


def _dumps(value: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(value)).decode()
