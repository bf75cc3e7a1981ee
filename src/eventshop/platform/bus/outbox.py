"""The outbox writer: the unit of work, a state change and the events it causes in one transaction.

    async with UnitOfWork.begin(pool, service="orders", correlation_id=cid) as uow:
        await uow.conn.execute("INSERT INTO orders ...")
        uow.emit(OrderCreated(...), aggregate_id=order_id)

Emitted events are written to the outbox by the same transaction when the block ends; if it
raises, the transaction rolls back and nothing is published. Inside a consumer the unit of work
is made by the bus with the handled event as cause: correlation id, causation id and trace
context follow from it. Outside one (an HTTP route), the trace context is the current span's
(the request's), unless given.

`uow.after_commit(fn)` runs `fn` once the transaction has committed, never if it rolls back
(metrics of what was decided: counted once, however often a batch is retried).

The outbox table and the trigger whose NOTIFY wakes the relay are in
platform/migrations/0001_outbox_inbox.sql; relay.py publishes the committed rows.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from eventshop.contracts import Envelope, EventPayload
from eventshop.contracts.envelope import new_envelope
from eventshop.platform.bus.wire import encode_body
from eventshop.platform.db import TransactionRolledBackError, last_commit_held
from eventshop.platform.observability.tracing import current_traceparent


class UnitOfWork:
    """One transaction's connection and the events it emits, with the ids they carry."""

    # slots and a cause kept as it is: a consumer makes one of these for every event it
    # handles, and most never emit, so the cause's id is rendered only when an event needs it
    __slots__ = (
        "_causation_id",
        "_cause",
        "committed_hooks",
        "conn",
        "correlation_id",
        "pending",
        "service",
        "traceparent",
    )

    def __init__(
        self,
        conn: asyncpg.Connection,
        service: str,
        correlation_id: str,
        causation_id: str | None = None,
        traceparent: str | None = None,
        pending: list[Envelope] | None = None,
        committed_hooks: list[Callable[[], None]] | None = None,
    ) -> None:
        self.conn = conn
        self.service = service
        self.correlation_id = correlation_id
        self._causation_id = causation_id
        self._cause: Envelope | None = None
        self.traceparent = traceparent
        #: emitted, written to the outbox by `flush` (shared by the units of work of one
        #: transaction, as are the hooks run after its commit)
        self.pending: list[Envelope] = [] if pending is None else pending
        self.committed_hooks: list[Callable[[], None]] = (
            [] if committed_hooks is None else committed_hooks
        )

    @property
    def causation_id(self) -> str | None:
        """The id of what caused the events emitted now (the event handled), if anything."""
        if self._causation_id is None and self._cause is not None:
            self._causation_id = str(self._cause.event_id)
        return self._causation_id

    @classmethod
    @asynccontextmanager
    async def begin(
        cls,
        pool: asyncpg.Pool,
        *,
        service: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
    ) -> AsyncIterator[UnitOfWork]:
        async with pool.acquire() as conn:
            async with conn.transaction():
                uow = cls(
                    conn=conn,
                    service=service,
                    correlation_id=correlation_id or str(uuid.uuid4()),
                    causation_id=causation_id,
                    traceparent=traceparent or current_traceparent(),
                )
                yield uow
                await uow.flush()
            # with nothing emitted, an error the block swallowed turns the COMMIT into a
            # ROLLBACK without a word: its caller must not report success (platform/db.py)
            if last_commit_held(conn) is False:
                raise TransactionRolledBackError(service)
        uow.run_committed_hooks()

    def caused_by(self, cause: Envelope) -> UnitOfWork:
        """The same transaction, now emitting events caused by `cause`."""
        uow = self._emitting_as(cause.correlation_id, None, cause.traceparent)
        uow._cause = cause
        return uow

    def acting_for(self, correlation_id: str, traceparent: str | None) -> UnitOfWork:
        """The same transaction, now emitting events for another request (a group of commands
        written together, platform/grouping.py: each event carries its own request's ids)."""
        return self._emitting_as(correlation_id, None, traceparent)

    def _emitting_as(
        self, correlation_id: str, causation_id: str | None, traceparent: str | None
    ) -> UnitOfWork:
        return UnitOfWork(
            self.conn,
            self.service,
            correlation_id,
            causation_id,
            traceparent,
            self.pending,
            self.committed_hooks,
        )

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run `hook` once this transaction has committed (not if it rolls back)."""
        self.committed_hooks.append(hook)

    def run_committed_hooks(self) -> None:
        """Called by whoever committed the transaction; a failing hook is not the commit's."""
        hooks = list(self.committed_hooks)
        self.committed_hooks.clear()
        for hook in hooks:
            with contextlib.suppress(Exception):
                hook()

    def emit(
        self, event: EventPayload, *, aggregate_id: str, occurred_at: datetime | None = None
    ) -> Envelope:
        envelope = new_envelope(
            event.event_type,
            event.schema_version,
            aggregate_id,
            event.model_dump(mode="json"),
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            traceparent=self.traceparent,
            occurred_at=occurred_at or datetime.now(UTC),
        )
        self.pending.append(envelope)
        return envelope

    async def flush(self) -> None:
        if self.pending:
            await write_outbox(self.conn, self.pending)
            self.pending.clear()


#: the columns `write_outbox` fills, in the order of its records, each with its type
_OUTBOX_TYPES = {
    "event_id": "uuid",
    "event_type": "text",
    "aggregate_id": "text",
    "correlation_id": "text",
    "causation_id": "text",
    "traceparent": "text",
    "schema_version": "int",
    "occurred_at": "timestamptz",
    "body": "bytea",
}
OUTBOX_COLUMNS = tuple(_OUTBOX_TYPES)
#: from this many events on, a binary COPY; fewer go in one INSERT (ADR 0020)
COPY_FROM = 10

INSERT_OUTBOX = "INSERT INTO outbox ({}) SELECT * FROM unnest({})".format(
    ", ".join(OUTBOX_COLUMNS),
    ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_OUTBOX_TYPES.values(), start=1)),
)


async def write_outbox(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
    """Append events to the outbox in one statement (and so one NOTIFY) for them all.

    Many events go in a binary COPY: at a hundred a transaction it cost the client 17% and
    PostgreSQL 22% less CPU than the multi-row INSERT; a few go in that INSERT, as a COPY takes
    a second round trip (ADR 0020). The statement-level trigger that wakes the relay fires for
    both.
    """
    if not envelopes:
        return
    records = [
        (
            e.event_id,
            e.event_type,
            e.aggregate_id,
            e.correlation_id,
            e.causation_id,
            e.traceparent,
            e.schema_version,
            e.occurred_at,
            encode_body(e),
        )
        for e in envelopes
    ]
    if len(records) >= COPY_FROM:
        await conn.copy_records_to_table("outbox", records=records, columns=OUTBOX_COLUMNS)
    else:
        await conn.execute(INSERT_OUTBOX, *(list(c) for c in zip(*records, strict=True)))
