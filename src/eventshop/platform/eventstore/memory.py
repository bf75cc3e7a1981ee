"""InMemoryEventStore: the event store's port in memory, for unit tests (no I/O).

It keeps the PostgreSQL adapter's semantics, not just its signatures, so the same contract
tests pass against both:

- work happens in a `MemoryTransaction` (`async with store.transaction() as tx`): what it
  appends is visible to it at once, to others only after it commits, and gone if it raises;
- the first append of a transaction takes the store's head lock and holds it until the
  transaction ends, as the PostgreSQL adapter holds the `event_log_head` row lock: positions
  are contiguous and become visible in order;
- a stale expected version is a ConcurrencyError; when it comes from losing a race (the
  stream moved while the writer queued for the head lock) the transaction can't be used
  after it, as PostgreSQL aborts it on the unique violation, so callers learn to roll back.

`with_upcasters` gives another store over the same log, reading it with other upcasters: an
older and a newer version of the code, side by side, as in the upcasting tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

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


class TransactionAbortedError(Exception):
    """The transaction failed earlier (a concurrency error): roll it back."""


class MemoryLog:
    """What an InMemoryEventStore keeps; stores made `with_upcasters` share it."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []  # committed, as stored, in global order
        self.streams: dict[str, list[RecordedEvent]] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.head_lock = asyncio.Lock()
        self.next_position = 1  # handed out under the head lock, like event_log_head


@dataclass
class MemoryTransaction:
    """One unit of work against an InMemoryEventStore."""

    log: MemoryLog
    appended: list[RecordedEvent] = field(default_factory=list)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    holds_head: bool = False
    aborted: bool = False
    done: bool = False

    def check(self, log: MemoryLog) -> None:
        if log is not self.log:
            raise ValueError("this transaction belongs to another in-memory store")
        if self.done:
            raise TransactionAbortedError("the transaction has ended")
        if self.aborted:
            raise TransactionAbortedError(
                "the transaction is aborted (an append failed in it): roll it back"
            )


class InMemoryEventStore:
    """The port in memory; see the module docstring."""

    def __init__(self, upcasters: Upcasters | None = None, *, log: MemoryLog | None = None) -> None:
        self.upcasters = upcasters if upcasters is not None else Upcasters()
        self._log = log if log is not None else MemoryLog()

    def with_upcasters(self, upcasters: Upcasters) -> InMemoryEventStore:
        """A store over the same log that reads it with other upcasters (another code version)."""
        return InMemoryEventStore(upcasters, log=self._log)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        tx = MemoryTransaction(self._log)
        try:
            yield tx
        except BaseException:
            self._end(tx, commit=False)
            raise
        # like COMMIT of an aborted PostgreSQL transaction: it rolls back, without an error
        self._end(tx, commit=not tx.aborted)

    def _end(self, tx: MemoryTransaction, *, commit: bool) -> None:
        if tx.done:
            return
        tx.done = True
        log = self._log
        if commit:
            for event in tx.appended:
                log.events.append(event)
                log.streams.setdefault(event.stream_id, []).append(event)
            for snapshot in tx.snapshots.values():
                kept = log.snapshots.get(snapshot.stream_id)
                if kept is None or kept.version <= snapshot.version:
                    log.snapshots[snapshot.stream_id] = snapshot
        elif tx.appended:
            # positions of a rolled-back transaction are handed out again, as the
            # PostgreSQL counter's update rolls back: the log stays contiguous
            log.next_position = tx.appended[0].global_position
        if tx.holds_head:
            tx.holds_head = False
            log.head_lock.release()

    # -- the port -----------------------------------------------------------------------------
    async def append(
        self,
        conn: MemoryTransaction,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent]:
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        conn.check(self._log)
        if not events:
            return []
        if self._version(conn, stream_id) != expected_version:
            raise ConcurrencyError(stream_id, expected_version, "the stream is at another version")
        await asyncio.sleep(0)  # a turn for others, as a round trip to a server would give
        if not conn.holds_head:
            await self._log.head_lock.acquire()
            conn.holds_head = True
        if self._version(conn, stream_id) != expected_version:
            # it moved while this writer queued for the head: the unique key's case
            conn.aborted = True
            raise ConcurrencyError(stream_id, expected_version, "a concurrent append won")
        base_meta = dict(metadata or {})
        now = datetime.now(UTC)
        recorded: list[RecordedEvent] = []
        for i, e in enumerate(events, start=1):
            meta = base_meta if e.metadata is None else {**base_meta, **e.metadata}
            recorded.append(
                RecordedEvent(
                    global_position=self._log.next_position,
                    stream_id=stream_id,
                    version=expected_version + i,
                    event_type=e.event_type,
                    schema_version=e.schema_version,
                    payload=_copy(e.payload),
                    recorded_at=now,
                    metadata=_copy(meta),
                )
            )
            self._log.next_position += 1
        conn.appended.extend(recorded)
        return [replace(r, payload=_copy(r.payload), metadata=dict(r.metadata)) for r in recorded]

    async def append_many(
        self, conn: MemoryTransaction, appends: Sequence[StreamAppend]
    ) -> list[RecordedEvent]:
        """Each stream checked before any is written; one that moves while this transaction
        queues for the head aborts it (as the unique key aborts PostgreSQL's), so a commit then
        keeps none of them."""
        check_appends(appends)
        conn.check(self._log)
        for a in appends:
            if a.events and self._version(conn, a.stream_id) != a.expected_version:
                raise ConcurrencyError(
                    a.stream_id, a.expected_version, "the stream is at another version"
                )
        recorded: list[RecordedEvent] = []
        for a in appends:
            recorded += await self.append(
                conn, a.stream_id, a.expected_version, a.events, metadata=a.metadata
            )
        return recorded

    async def load_many(
        self, conn: MemoryTransaction, stream_ids: Sequence[str]
    ) -> dict[str, list[RecordedEvent]]:
        return {s: await self.load(conn, s) for s in stream_ids}

    async def load(
        self,
        conn: MemoryTransaction,
        stream_id: str,
        from_version: int = 0,
        *,
        to_version: int | None = None,
        until: datetime | None = None,
    ) -> list[RecordedEvent]:
        conn.check(self._log)
        return [
            self._read(e)
            for e in self._stream(conn, stream_id)
            if e.version > from_version
            and (to_version is None or e.version <= to_version)
            and (until is None or e.recorded_at <= until)
        ]

    async def version_of(self, conn: MemoryTransaction, stream_id: str) -> int:
        conn.check(self._log)
        return self._version(conn, stream_id)

    async def head(self, conn: MemoryTransaction) -> int:
        conn.check(self._log)
        return self._head(conn)

    async def read_all(
        self,
        conn: MemoryTransaction,
        after: int = 0,
        *,
        limit: int = 1_000,
        event_types: Sequence[str] | None = None,
    ) -> Page:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        conn.check(self._log)
        head = self._head(conn)
        log = self._log.events
        visible = log if not conn.appended else [*log, *conn.appended]
        wanted = None if event_types is None else set(event_types)
        events: list[RecordedEvent] = []
        for e in visible[_first_after(visible, after) :]:
            if wanted is not None and e.event_type not in wanted:
                continue
            events.append(self._read(e))
            if len(events) == limit:
                return Page(events, e.global_position, head)
        return Page(events, max(head, after), head)

    async def save_snapshot(self, conn: MemoryTransaction, snapshot: Snapshot) -> None:
        conn.check(self._log)
        kept = conn.snapshots.get(snapshot.stream_id)
        if kept is None or kept.version <= snapshot.version:
            conn.snapshots[snapshot.stream_id] = replace(
                snapshot, state=_copy(snapshot.state), taken_at=datetime.now(UTC)
            )

    async def load_snapshot(self, conn: MemoryTransaction, stream_id: str) -> Snapshot | None:
        conn.check(self._log)
        snapshot = conn.snapshots.get(stream_id) or self._log.snapshots.get(stream_id)
        return None if snapshot is None else replace(snapshot, state=_copy(snapshot.state))

    # -- inside -------------------------------------------------------------------------------
    def _stream(self, tx: MemoryTransaction, stream_id: str) -> list[RecordedEvent]:
        committed = self._log.streams.get(stream_id, [])
        own = [e for e in tx.appended if e.stream_id == stream_id]
        return [*committed, *own] if own else committed

    def _version(self, tx: MemoryTransaction, stream_id: str) -> int:
        stream = self._stream(tx, stream_id)
        return stream[-1].version if stream else 0

    def _head(self, tx: MemoryTransaction) -> int:
        if tx.appended:
            return tx.appended[-1].global_position
        log = self._log.events
        return log[-1].global_position if log else 0

    def _read(self, e: RecordedEvent) -> RecordedEvent:
        version, payload = self.upcasters.upcast(e.event_type, e.schema_version, _copy(e.payload))
        return replace(
            e,
            schema_version=version,
            payload=payload,
            metadata=dict(e.metadata),
            stored_schema_version=e.schema_version if version != e.schema_version else None,
        )


def _first_after(log: list[RecordedEvent], position: int) -> int:
    """Index of the first event after `position` (the log is sorted by position)."""
    lo, hi = 0, len(log)
    while lo < hi:
        mid = (lo + hi) // 2
        if log[mid].global_position <= position:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON, as a round trip through the database would make."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(dict(value)))
    return copied
