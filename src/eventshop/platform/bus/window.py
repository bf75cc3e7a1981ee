"""A window of deliveries handled in ONE database transaction (ADR 0003).

1. record every event_id in the inbox (one multi-row INSERT .. ON CONFLICT DO NOTHING);
   ids already there are duplicates: acknowledged, no effect (unless the subscription keeps
   no inbox: handlers idempotent by the event id themselves, that emit nothing);
2. take, in one order, the row locks the window's handlers will take (the subscription's
   `lock_first`, where it has one: replicas of a service then never deadlock across a window's
   events, ADR 0011);
3. run the handler of each new event (with a timeout) in that transaction; the events the
   handlers emit go to the outbox in the same transaction. A `BatchHandler` gets the
   window's consecutive events of its type in one call (one multi-row INSERT instead of one
   round trip per event).

If a handler raises, the batch's transaction is rolled back and the batch runs again one
event per savepoint, so only the failing events are left out; what becomes of those is
failures.py's, the commit's acknowledgement is the consumer's (consumer.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from dataclasses import dataclass

import asyncpg
import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from eventshop.contracts import Envelope, EventPayload
from eventshop.platform.bus import inbox
from eventshop.platform.bus.failures import is_infrastructure
from eventshop.platform.bus.outbox import UnitOfWork
from eventshop.platform.bus.received import Received
from eventshop.platform.bus.types import BatchHandler, ConsumerStats, Delivery, Subscription
from eventshop.platform.db import TransactionRolledBackError, last_commit_held
from eventshop.platform.observability import tracing
from eventshop.platform.observability.metrics import EventMetrics


@dataclass
class Item:
    message: Received
    envelope: Envelope
    payload: EventPayload


class HandlerFailedError(Exception):
    """A handler failed in the fast path; `item` is the event it failed on, when known."""

    def __init__(self, item: Item | None, error: BaseException) -> None:
        super().__init__(repr(error))
        self.item = item
        self.error = error


class WindowRunner:
    """Runs a consumer's windows: the fast path, then, after a handler failed, the slow one."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        pool: asyncpg.Pool,
        handler_timeout_s: float,
        stats: ConsumerStats,
        metrics: EventMetrics,
    ) -> None:
        self.subscription = subscription
        self.name = subscription.service
        self._pool = pool
        self._timeout = handler_timeout_s
        self.stats = stats
        self.metrics = metrics
        self._inbox = subscription.inbox

    async def run(self, items: list[Item]) -> list[tuple[Item, BaseException]]:
        """Handle `items`; returns the events whose handler failed, with the error. A database
        outage is raised (the caller holds the window), never returned."""
        try:
            await self._apply_batch(items)
            return []
        except HandlerFailedError as failed:
            return await self._apply_one_by_one(items, failed)

    async def _apply_batch(self, items: list[Item]) -> None:
        """The fast path: the whole window in one transaction, no savepoints."""
        async with self._pool.acquire() as conn:  # held past the COMMIT, to read what it did
            await self._apply_in_transaction(conn, items)

    async def _apply_in_transaction(self, conn: asyncpg.Connection, items: list[Item]) -> None:
        consumer = self.name
        # A handler that swallowed a database error left the transaction aborted, and its
        # COMMIT then rolls back without an error. The outbox INSERT finds that out; with
        # nothing to write, the connection's record of its COMMIT does (platform/db.py), and
        # a connection that keeps none is asked with a SELECT 1 before the COMMIT.
        knows_commits = last_commit_held(conn) is not None
        async with conn.transaction():
            ids = [i.envelope.event_id for i in items]
            new = await inbox.record_new(conn, consumer, ids) if self._inbox else set(ids)
            uow = UnitOfWork(conn=conn, service=consumer, correlation_id="")
            fresh: list[Item] = []
            if len(new) == len(items):  # as many new ids as events: each is new, and once
                fresh = items
            else:
                for item in items:
                    eid = item.envelope.event_id
                    if eid not in new:
                        continue
                    new.discard(eid)  # the same event twice in one window runs once
                    fresh.append(item)
            if self.subscription.lock_first is not None and fresh:
                await self.subscription.lock_first(conn, [i.payload for i in fresh])
            handler_for = self.subscription.handler_for
            # in delivery order; consecutive events of one batch handler go in one call
            for handler, run in itertools.groupby(
                fresh, key=lambda i: handler_for(i.envelope.event_type)
            ):
                try:
                    if isinstance(handler, BatchHandler):
                        events = list(run)
                        try:
                            await self._run_batch_handler(uow, handler, events)
                        except Exception as exc:
                            if len(events) == 1 and not is_infrastructure(exc):
                                # that was the event's attempt: the slow path won't rerun it
                                raise HandlerFailedError(events[0], exc) from exc
                            raise
                    else:
                        for item in run:
                            try:
                                await self._run_handler(uow.caused_by(item.envelope), item)
                            except Exception as exc:
                                if is_infrastructure(exc):
                                    raise
                                raise HandlerFailedError(item, exc) from exc
                except HandlerFailedError:
                    raise
                except Exception as exc:
                    if is_infrastructure(exc):
                        raise
                    raise HandlerFailedError(None, exc) from exc
            self._check_emits(uow)
            try:
                if uow.pending:
                    await uow.flush()
                elif not knows_commits:
                    await conn.execute("SELECT 1")
            except asyncpg.InFailedSQLTransactionError as exc:
                raise HandlerFailedError(None, exc) from exc
        if knows_commits and not last_commit_held(conn):
            raise HandlerFailedError(None, TransactionRolledBackError(consumer))
        uow.run_committed_hooks()
        # counted by type, not by event: a metric's increment takes a lock
        for event_type, n in collections.Counter(i.envelope.event_type for i in fresh).items():
            self.stats.by_type[event_type] += n
            self.metrics.handled(event_type, n)
        self.stats.handled += len(fresh)
        self.stats.duplicates += len(items) - len(fresh)
        self.metrics.duplicates(len(items) - len(fresh))

    async def _apply_one_by_one(
        self, items: list[Item], failed: HandlerFailedError
    ) -> list[tuple[Item, BaseException]]:
        """The slow path, after a handler failed: a savepoint per event isolates the failures.

        The event the fast path failed on (when known) is not run again: that was its attempt."""
        failures: list[tuple[Item, BaseException]] = []
        if failed.item is not None:
            failures.append((failed.item, failed.error))
        rest = [i for i in items if i is not failed.item]
        handled = duplicates = 0
        ran: list[Item] = []
        committed: list[UnitOfWork] = []
        if not rest:
            return failures
        async with self._pool.acquire() as conn, conn.transaction():
            if self.subscription.lock_first is not None:
                await self.subscription.lock_first(conn, [i.payload for i in rest])
            for item in rest:
                try:
                    async with conn.transaction():
                        if self._inbox and not await inbox.record_one(
                            conn, self.name, item.envelope.event_id
                        ):
                            duplicates += 1
                            continue
                        uow = UnitOfWork(conn=conn, service=self.name, correlation_id="")
                        uow = uow.caused_by(item.envelope)
                        await self._run_handler(uow, item)
                        self._check_emits(uow)
                        await uow.flush()
                        await conn.execute("SELECT 1")  # raises if the handler left it aborted
                        handled += 1
                        ran.append(item)
                        committed.append(uow)
                except Exception as exc:
                    if is_infrastructure(exc):
                        raise
                    failures.append((item, exc))
        self.stats.handled += handled
        self.stats.duplicates += duplicates
        self.metrics.duplicates(duplicates)
        for uow in committed:
            uow.run_committed_hooks()
        for item in ran:
            self.stats.by_type[item.envelope.event_type] += 1
            self.metrics.handled(item.envelope.event_type)
        return failures

    def _check_emits(self, uow: UnitOfWork) -> None:
        """Without an inbox, a redelivered event runs again: what it emitted would go out twice."""
        if uow.pending and not self._inbox:
            raise HandlerFailedError(
                None, RuntimeError(f"{self.name} keeps no inbox: its handlers may not emit")
            )

    async def _run_handler(self, uow: UnitOfWork, item: Item) -> None:
        env = item.envelope
        handler = self.subscription.handler_for(env.event_type)
        assert handler is not None
        event_id = str(env.event_id)
        with (
            structlog.contextvars.bound_contextvars(
                event_id=event_id,
                event_type=env.event_type,
                correlation_id=env.correlation_id,
                causation_id=env.causation_id,
            ),
            tracing.handling_span(
                self.name,
                traceparent=_traceparent_of(item),
                event_id=event_id,
                event_type=env.event_type,
                correlation_id=env.correlation_id,
                causation_id=env.causation_id,
            ) as span,
        ):
            if span is not None:  # what the handler emits is caused by this span
                uow.traceparent = tracing.traceparent_of(span)
            started = time.perf_counter()
            try:
                # a timeout in this task, not wait_for's extra task per event
                async with asyncio.timeout(self._timeout):
                    await handler(uow, env, item.payload)
            finally:
                self.metrics.latency(env.event_type, time.perf_counter() - started)

    async def _run_batch_handler(
        self, uow: UnitOfWork, handler: BatchHandler, run: list[Item]
    ) -> None:
        deliveries = [(uow.caused_by(i.envelope), i.envelope, i.payload) for i in run]
        spans = _batch_spans(self.name, run, deliveries)  # none unless an event is traced
        # the call's statements serve every event of the run: they are spans under the first
        # traced one's (at a sampling ratio of a few percent, the only one)
        current = trace.use_span(spans[0], end_on_exit=False) if spans else contextlib.nullcontext()
        started = time.perf_counter()
        try:
            with (
                current,
                structlog.contextvars.bound_contextvars(
                    event_type=run[0].envelope.event_type, events=len(run)
                ),
            ):
                async with asyncio.timeout(self._timeout):
                    await handler.many(deliveries)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR)
            raise
        finally:
            for span in spans:
                span.end()
            self.metrics.latency(run[0].envelope.event_type, time.perf_counter() - started)


def _traceparent_of(item: Item) -> str | None:
    """The message's `traceparent` header (it names the publishing relay's span), else the
    envelope's (a message published by other means)."""
    value = item.message.headers.get("traceparent") if item.message.headers else None
    return value if isinstance(value, str) else item.envelope.traceparent


def _batch_spans(service: str, run: list[Item], deliveries: list[Delivery]) -> list[Span]:
    """A CONSUMER span per traced event of a batch handler's call, ended by the caller; each
    event's unit of work then emits under its own span."""
    spans: list[Span] = []
    for item, (uow, env, _) in zip(run, deliveries, strict=True):
        traceparent = _traceparent_of(item)
        if traceparent is None:
            continue
        event_id = str(env.event_id)
        span = tracing.start_span(
            f"handle {env.event_type}",
            parent_traceparent=traceparent,
            kind=SpanKind.CONSUMER,
            attributes=tracing.event_attributes(
                service,
                event_id=event_id,
                event_type=env.event_type,
                correlation_id=env.correlation_id,
                causation_id=env.causation_id,
            ),
        )
        if span is not None:
            uow.traceparent = tracing.traceparent_of(span)
            spans.append(span)
    return spans
