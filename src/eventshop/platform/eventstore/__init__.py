"""The event store: append-only streams, one global order, snapshots, upcasting, projections.

A service that event-sources an aggregate lists "eventshop.platform.eventstore.migrations" in
its migrations and appends with `PostgresEventStore` on the connection of its unit of work, so
the stream, its read models, the outbox and the inbox commit together.

    port.py        the port (EventStore), its types and the concurrency error
    postgres.py    PostgresEventStore: JSONB rows, positions from a locked counter (ADR 0005)
    memory.py      InMemoryEventStore: the same semantics, for unit tests
    upcasting.py   Upcasters: old schema versions read as the current one
    snapshots.py   SnapshotPolicy, load_state: a snapshot + the events after it
    projections.py Projection, CatchUp (live subscription)
    rebuild.py     rebuild a projection into shadow tables and swap it in
"""

from eventshop.platform.eventstore.memory import InMemoryEventStore, MemoryTransaction
from eventshop.platform.eventstore.port import (
    ConcurrencyError,
    EventStore,
    NewEvent,
    Page,
    RecordedEvent,
    Snapshot,
    StreamAppend,
)
from eventshop.platform.eventstore.postgres import PostgresEventStore
from eventshop.platform.eventstore.snapshots import (
    Loaded,
    SnapshotPolicy,
    StateCodec,
    load_state,
    snapshot_if_due,
)
from eventshop.platform.eventstore.upcasting import UpcastError, Upcasters

MIGRATIONS = "eventshop.platform.eventstore.migrations"

__all__ = [
    "MIGRATIONS",
    "ConcurrencyError",
    "EventStore",
    "InMemoryEventStore",
    "Loaded",
    "MemoryTransaction",
    "NewEvent",
    "Page",
    "PostgresEventStore",
    "RecordedEvent",
    "Snapshot",
    "SnapshotPolicy",
    "StateCodec",
    "StreamAppend",
    "UpcastError",
    "Upcasters",
    "load_state",
    "snapshot_if_due",
]
