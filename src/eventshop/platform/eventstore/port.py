"""The event store's port: what a service may ask of a store, whatever keeps the events.

Two adapters implement it: `PostgresEventStore` (the real one: a table per service schema, in
the caller's transaction) and `InMemoryEventStore` (for unit tests, with the same transaction
and ordering semantics). One contract test suite runs against both.

Every operation takes the caller's transaction handle `conn` (an asyncpg connection inside a
transaction, or a `MemoryTransaction`): the store never begins or commits anything, because an
append is one part of a larger transaction (read model, outbox, inbox).

Guarantees of every adapter:
- versions in a stream are contiguous from 1; `append(..., expected_version=n, ...)` writes
  n+1, n+2, ... or raises `ConcurrencyError` and writes nothing: never an overwrite, never a gap;
- global positions are contiguous from 1 and handed out in commit order, so a reader that has
  seen position p has seen, or will never see, nothing below p (docs/adr/0005);
- an event stored with an old schema version is read as the current one (its upcasters run on
  the read path), and `RecordedEvent.stored_schema_version` says what was on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

Conn = TypeVar("Conn", contravariant=True)


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
    #: merged over the append's metadata (correlation_id, causation_id, ...)
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of an `append_many`: its events after `expected_version`."""

    stream_id: str
    expected_version: int
    events: Sequence[NewEvent]
    metadata: Mapping[str, Any] | None = None


def check_appends(appends: Sequence[StreamAppend]) -> None:
    """What every adapter refuses in an `append_many`: a stream twice, a negative version."""
    seen: set[str] = set()
    for a in appends:
        if a.expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if a.stream_id in seen:
            raise ValueError(f"stream {a.stream_id!r} twice in one append_many: merge its events")
        seen.add(a.stream_id)


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store keeps it, read as the current version of its schema."""

    global_position: int
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    recorded_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the schema version on disk when an upcaster brought it to `schema_version`, else None
    stored_schema_version: int | None = None

    @property
    def correlation_id(self) -> str | None:
        value = self.metadata.get("correlation_id")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        value = self.metadata.get("causation_id")
        return None if value is None else str(value)

    @property
    def was_upcast(self) -> bool:
        return self.stored_schema_version is not None


@dataclass(frozen=True)
class Snapshot:
    """A stream's folded state as of `version`; `schema_version` is the shape of `state`.

    A snapshot is an optimisation only: a loader ignores one whose shape it does not know and
    replays the stream instead, so losing or dropping snapshots changes no result.
    """

    stream_id: str
    version: int
    schema_version: int
    state: dict[str, Any]
    taken_at: datetime | None = None


class EventStore(Protocol[Conn]):
    """Streams keyed by aggregate id, one global order; see the module docstring."""

    async def append(
        self,
        conn: Conn,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append after `expected_version` (0: a new stream); ConcurrencyError if it moved."""
        ...

    async def load(
        self,
        conn: Conn,
        stream_id: str,
        from_version: int = 0,
        *,
        to_version: int | None = None,
        until: datetime | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events after `from_version` (up to `to_version`, or recorded at or
        before `until`), in version order."""
        ...

    async def append_many(self, conn: Conn, appends: Sequence[StreamAppend]) -> list[RecordedEvent]:
        """Several streams' appends as one (each stream at most once): all of them, their global
        positions in the order given, or none of them and ConcurrencyError if any stream moved.
        A consumer advancing a window's aggregates appends for all of them in one round trip."""
        ...

    async def load_many(
        self, conn: Conn, stream_ids: Sequence[str]
    ) -> dict[str, list[RecordedEvent]]:
        """Whole streams at once, each in version order; a stream with no events maps to []."""
        ...

    async def version_of(self, conn: Conn, stream_id: str) -> int:
        """The stream's current version (0: no such stream)."""
        ...

    async def head(self, conn: Conn) -> int:
        """The global position of the last committed event (0: none)."""
        ...

    async def read_all(
        self,
        conn: Conn,
        after: int = 0,
        *,
        limit: int = 1_000,
        event_types: Sequence[str] | None = None,
    ) -> Page:
        """Events after global position `after`, in global order, at most `limit` of them."""
        ...

    async def save_snapshot(self, conn: Conn, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless a newer one of the stream is kept already."""
        ...

    async def load_snapshot(self, conn: Conn, stream_id: str) -> Snapshot | None: ...


@dataclass(frozen=True)
class Page:
    """One read of the global log.

    `position` is where the next read starts: the last event's position, or, when the page is
    not full, the head the read was made against (events past a filter were looked at too).
    """

    events: list[RecordedEvent]
    position: int
    head: int

    @property
    def caught_up(self) -> bool:
        return self.position >= self.head
