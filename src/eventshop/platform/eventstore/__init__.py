"""The event store: append-only streams with optimistic concurrency, in PostgreSQL.

A service that event-sources an aggregate lists "eventshop.platform.eventstore.migrations" in
its migrations and appends with `PostgresEventStore` on the connection of its unit of work, so
the stream, its read models, the outbox and the inbox commit together.
"""

from eventshop.platform.eventstore.store import (
    ConcurrencyError,
    NewEvent,
    PostgresEventStore,
    RecordedEvent,
)

MIGRATIONS = "eventshop.platform.eventstore.migrations"

__all__ = ["MIGRATIONS", "ConcurrencyError", "NewEvent", "PostgresEventStore", "RecordedEvent"]
