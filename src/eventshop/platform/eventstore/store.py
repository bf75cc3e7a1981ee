"""PostgresEventStore: streams of events in the `events` table of the caller's schema.

It takes the caller's connection rather than a pool because the append is one part of a
larger transaction (read model, outbox, inbox): the store never begins or commits anything.

Versions in a stream are contiguous from 1. `append(..., expected_version=n, ...)` writes
versions n+1, n+2, ... and succeeds only if the stream is at version n when it commits: a
writer that read a stale version gets `ConcurrencyError`, reloads and decides again (or lets
the message be retried). `global_position` orders every recorded event across streams; a
catch-up subscription must still allow for gaps (a sequence value is taken at insert time, but
transactions commit in their own order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

STREAM_VERSION_CONSTRAINT = "events_stream_version_key"

# The WHERE guards the other side of a stale expected version: one that is *ahead* of the
# stream would otherwise leave a gap (expected 5 on a stream at 3 inserts 6); the unique
# constraint alone catches the one that is behind, and the race of two writers.
APPEND = """
INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata)
SELECT $1, $2 + e.ord, e.event_type, e.schema_version, e.payload, $6::jsonb
FROM unnest($3::text[], $4::int[], $5::jsonb[])
     WITH ORDINALITY AS e(event_type, schema_version, payload, ord)
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $2
RETURNING global_position, version, recorded_at
"""

LOAD = """
SELECT global_position, stream_id, version, event_type, schema_version, payload, metadata,
       recorded_at
FROM events
WHERE stream_id = $1 AND version > $2
ORDER BY version
"""


class ConcurrencyError(Exception):
    """The stream is not at the version the writer expected: someone appended in between."""

    def __init__(self, stream_id: str, expected_version: int, detail: str = "") -> None:
        message = (
            f"stream {stream_id!r} is no longer at version {expected_version}: another writer"
            " appended to it first; reload the stream and decide again"
        )
        super().__init__(f"{message} ({detail})" if detail else message)
        self.stream_id = stream_id
        self.expected_version = expected_version


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type, its data and the version of its data's schema."""

    event_type: str
    payload: Mapping[str, Any]
    schema_version: int = 1


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store keeps it."""

    global_position: int
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    recorded_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str | None:
        value = self.metadata.get("correlation_id")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        value = self.metadata.get("causation_id")
        return None if value is None else str(value)


class PostgresEventStore:
    """Append to and load streams; stateless, so one instance serves every connection."""

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

        Raises ConcurrencyError if the stream is not at `expected_version`. A unique violation
        aborts the caller's transaction (PostgreSQL semantics): the caller rolls back, which is
        what a retried message or a failed request does anyway.
        """
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if not events:
            return []
        meta = dict(metadata or {})
        try:
            rows = await conn.fetch(
                APPEND,
                stream_id,
                expected_version,
                [e.event_type for e in events],
                [e.schema_version for e in events],
                [_dumps(e.payload) for e in events],
                _dumps(meta),
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
            for i, e in enumerate(events, start=1)
        ]

    async def load(
        self, conn: asyncpg.Connection, stream_id: str, from_version: int = 0
    ) -> list[RecordedEvent]:
        """The events of `stream_id` after `from_version`, in version order ([] if none)."""
        rows = await conn.fetch(LOAD, stream_id, from_version)
        return [
            RecordedEvent(
                global_position=r["global_position"],
                stream_id=r["stream_id"],
                version=r["version"],
                event_type=r["event_type"],
                schema_version=r["schema_version"],
                payload=orjson.loads(r["payload"]),
                recorded_at=r["recorded_at"],
                metadata=orjson.loads(r["metadata"]),
            )
            for r in rows
        ]

    async def version_of(self, conn: asyncpg.Connection, stream_id: str) -> int:
        """The stream's current version (0 if it has no events)."""
        version: int = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return version


def _dumps(value: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(value)).decode()
