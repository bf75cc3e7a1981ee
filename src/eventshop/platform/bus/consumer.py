"""The consumer: at-least-once delivery in, exactly-once effects out.

One consumer per service queue, on its own channel with a bounded prefetch (its bulkhead: a
slow or failing service never holds another's messages). It takes what has arrived, up to
the prefetch window, as one batch and handles it in ONE database transaction:

1. record every event_id in the inbox (one multi-row INSERT .. ON CONFLICT DO NOTHING);
   ids already there are duplicates: acknowledged, no effect;
2. run the handler of each new event (with a timeout) in that transaction; the events the
   handlers emit go to the outbox in the same transaction. A `BatchHandler` gets the
   window's consecutive events of its type in one call (one multi-row INSERT instead of one
   round trip per event);
3. commit, and only then acknowledge the whole window with one `basic.ack(multiple=True)`.

If a handler raises, the batch's transaction is rolled back and the batch runs again one
event per savepoint, so only the failing events are left out. Those go up the retry ladder
(re-published, confirmed, to the delay queue of their attempt) and, after the last rung, to
the parking lot with the error, attempt count, original routing key and first failure time
in their headers. A body that can't be decoded, fails its contract, or has a type this
service has no handler for, is parked at once: no retry would change it. A database outage
is not the message's fault: the batch is held and tried again until the database is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from opentelemetry.trace import Span, SpanKind, StatusCode

from eventshop.contracts import Envelope, EventPayload, Registry
from eventshop.platform import faults
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues, declare_service_queues
from eventshop.platform.bus.wire import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILURE,
    H_PARKED_AT,
    H_PARKED_BY,
    H_ROUTING_KEY,
    header_int,
)
from eventshop.platform.observability import tracing
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import EventMetrics
from eventshop.platform.uow import UnitOfWork

log = get_logger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
#: what a batch handler gets: for each event, the arguments a `Handler` would get
Delivery = tuple[UnitOfWork, Envelope, Any]


@dataclass(frozen=True)
class BatchHandler:
    """A handler that can take many events of its type at once, e.g. with one multi-row INSERT.

        async def on_pings(events: Sequence[Delivery]) -> None:
            conn = events[0][0].conn  # one connection, one transaction for all of them
            await conn.execute("INSERT ... SELECT * FROM unnest($1::uuid[], ...)", ...)
            for uow, env, ping in events:
                uow.emit(Ponged(seq=ping.seq), aggregate_id=env.aggregate_id)

        Subscription("svc", {"selfcheck.pinged": BatchHandler(on_pings)})

    Each event keeps its own unit of work (its emits are caused by it). The consumer passes a
    window's consecutive events of this handler in one call, under one timeout; if the call
    fails, the window is handled again one event per savepoint, each through this same
    function with a single event, so only the failing events go up the retry ladder. It is
    also a plain `Handler` (one event).
    """

    many: Callable[[Sequence[Delivery]], Awaitable[None]]

    async def __call__(self, uow: UnitOfWork, envelope: Envelope, payload: Any) -> None:
        await self.many([(uow, envelope, payload)])

#: errors that say the database (not the message) is the problem: hold the batch and retry
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)

INSERT_INBOX_MANY = """
INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
ON CONFLICT DO NOTHING RETURNING event_id
"""
INSERT_INBOX_ONE = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1
"""


def _is_infrastructure(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):  # a slow handler is the handler's failure
        return False
    return isinstance(exc, (*INFRASTRUCTURE_ERRORS, OSError))


@dataclass
class Subscription:
    """What one service consumes: a handler per event type, and its queue names."""

    service: str
    handlers: Mapping[str, Handler]
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000)
    #: how long a window waits, after its first message, for more to fill it (up to the
    #: prefetch). 0 for a service on the saga's path; a service nobody waits for (the archive,
    #: say) trades that much delay for fewer, larger transactions (ADR 0006)
    linger_s: float = 0.0

    def handler_for(self, event_type: str) -> Handler | None:
        """The handler of `event_type`; a handler under "#" takes every type (the archive)."""
        return self.handlers.get(event_type) or self.handlers.get("#")

    @property
    def queues(self) -> ServiceQueues:
        return ServiceQueues(self.service, tuple(sorted(self.handlers)), self.retry_delays_ms)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    parked: int = 0
    batches: int = 0
    by_type: collections.Counter[str] = field(default_factory=collections.Counter)


class _HandlerFailedError(Exception):
    """A handler failed in the fast path; `item` is the event it failed on, when known."""

    def __init__(self, item: _Item | None, error: BaseException) -> None:
        super().__init__(repr(error))
        self.item = item
        self.error = error


@dataclass
class _Item:
    message: AbstractIncomingMessage
    envelope: Envelope
    payload: EventPayload


class Consumer:
    def __init__(
        self,
        subscription: Subscription,
        *,
        connection: AbstractConnection,
        pool: asyncpg.Pool,
        publisher: Publisher,
        registry: Registry,
        exchange: str,
        prefetch: int = 256,
        handler_timeout_s: float = 30.0,
    ) -> None:
        self.subscription = subscription
        self.queues = subscription.queues
        self._connection = connection
        self._pool = pool
        self._publisher = publisher
        self._registry = registry
        self._exchange = exchange
        self._prefetch = prefetch
        self._timeout = handler_timeout_s
        self._channel: AbstractChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag: str | None = None
        self._buffer: collections.deque[AbstractIncomingMessage] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = ConsumerStats()
        self.metrics = EventMetrics(subscription.service)

    @property
    def name(self) -> str:
        return self.subscription.service

    @property
    def attached(self) -> bool:
        return self._tag is not None and self._channel is not None and not self._channel.is_closed

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await declare_service_queues(self._connection, self._exchange, self.queues)
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # declared (not just looked up) on the robust channel, so that after a reconnect
        # aio-pika re-declares it and re-attaches the consumer by itself
        self._queue = await self._channel.declare_queue(
            self.queues.main, durable=True, arguments=self.queues.main_arguments()  # type: ignore[arg-type]
        )
        self._worker = asyncio.create_task(self._work(), name=f"consumer:{self.name}")
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, finish the batch in hand; the rest is redelivered."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        self._tag = None
        self._arrived.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(self._worker, timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                self._worker.cancel()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()  # unacked messages are requeued by the broker

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message)
        self._arrived.set()

    # -- the batch loop ------------------------------------------------------------------------
    async def _work(self) -> None:
        while not self._stopping:
            if not self._buffer:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self.subscription.linger_s and len(self._buffer) < self._prefetch:
                await self._fill(self.subscription.linger_s)
            batch = self._take_batch()
            try:
                await self._handle_batch(batch)
            except Exception:  # never let one batch kill the consumer: it will be redelivered
                log.exception("consumer.batch_crashed", consumer=self.name, size=len(batch))
                for message in batch:  # or a later ack(multiple=True) acks them: lost
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)
                await asyncio.sleep(0.5)

    async def _fill(self, linger_s: float) -> None:
        """Wait until the buffer holds a whole window, `linger_s` at most (or until stopping)."""
        deadline = time.monotonic() + linger_s
        while len(self._buffer) < self._prefetch and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def _take_batch(self) -> list[AbstractIncomingMessage]:
        """Up to a prefetch window of buffered messages, all from the same channel."""
        first = self._buffer.popleft()
        batch = [first]
        channel = _channel_of(first)
        while self._buffer and len(batch) < self._prefetch:
            if _channel_of(self._buffer[0]) is not channel:
                break  # delivered before a reconnect: tags of two channels never mix in an ack
            batch.append(self._buffer.popleft())
        return batch

    async def _handle_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        self.stats.batches += 1
        items: list[_Item] = []
        to_park: list[tuple[AbstractIncomingMessage, str]] = []
        for message in batch:
            try:
                envelope, payload = self._registry.decode(message.body)
            except Exception as exc:  # ContractError, or an upcaster's bug: no retry fixes it
                to_park.append((message, f"{type(exc).__name__}: {exc}"))
                continue
            if self.subscription.handler_for(envelope.event_type) is None:
                to_park.append((message, f"no handler in {self.name} for {envelope.event_type}"))
                continue
            items.append(_Item(message, envelope, payload))

        failures = await self._apply_until_done(items, batch)
        if failures is None:
            return  # the channel died while the database was away: the broker redelivers
        faults.point("consumer.before_ack")
        await self._settle(batch, failures, to_park)

    async def _apply_until_done(
        self, items: list[_Item], batch: list[AbstractIncomingMessage]
    ) -> list[tuple[_Item, BaseException]] | None:
        backoff = 0.1
        while True:
            try:
                if not items:
                    return []
                try:
                    await self._apply_batch(items)
                    return []
                except _HandlerFailedError as failed:
                    return await self._apply_one_by_one(items, failed)
            except Exception as exc:
                if not _is_infrastructure(exc):
                    raise
                if _channel_of(batch[0]).is_closed:
                    return None
                log.warning("consumer.database_unavailable", consumer=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _apply_batch(self, items: list[_Item]) -> None:
        """The fast path: the whole window in one transaction, no savepoints."""
        consumer = self.name
        async with self._pool.acquire() as conn, conn.transaction():
            new = {
                r["event_id"]
                for r in await conn.fetch(
                    INSERT_INBOX_MANY, consumer, [i.envelope.event_id for i in items]
                )
            }
            uow = UnitOfWork(conn=conn, service=consumer, correlation_id="")
            fresh: list[_Item] = []
            for item in items:
                eid = item.envelope.event_id
                if eid not in new:
                    continue
                new.discard(eid)  # the same event twice in one window runs once
                fresh.append(item)
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
                            if len(events) == 1 and not _is_infrastructure(exc):
                                # that was the event's attempt: the slow path won't rerun it
                                raise _HandlerFailedError(events[0], exc) from exc
                            raise
                    else:
                        for item in run:
                            try:
                                await self._run_handler(uow.caused_by(item.envelope), item)
                            except Exception as exc:
                                if _is_infrastructure(exc):
                                    raise
                                raise _HandlerFailedError(item, exc) from exc
                except _HandlerFailedError:
                    raise
                except Exception as exc:
                    if _is_infrastructure(exc):
                        raise
                    raise _HandlerFailedError(None, exc) from exc
            # A handler that swallowed a database error left the transaction aborted, and
            # COMMIT would then roll back without a word. The outbox INSERT finds it out; with
            # nothing to write, a SELECT 1 does.
            try:
                if uow.pending:
                    await uow.flush()
                else:
                    await conn.execute("SELECT 1")
            except asyncpg.InFailedSQLTransactionError as exc:
                raise _HandlerFailedError(None, exc) from exc
        uow.run_committed_hooks()
        for item in fresh:
            self.stats.by_type[item.envelope.event_type] += 1
            self.metrics.handled(item.envelope.event_type)
        self.stats.handled += len(fresh)
        self.stats.duplicates += len(items) - len(fresh)
        self.metrics.duplicates(len(items) - len(fresh))

    async def _apply_one_by_one(
        self, items: list[_Item], failed: _HandlerFailedError
    ) -> list[tuple[_Item, BaseException]]:
        """The slow path, after a handler failed: a savepoint per event isolates the failures.

        The event the fast path failed on (when known) is not run again: that was its attempt."""
        failures: list[tuple[_Item, BaseException]] = []
        if failed.item is not None:
            failures.append((failed.item, failed.error))
        rest = [i for i in items if i is not failed.item]
        handled = duplicates = 0
        ran: list[_Item] = []
        committed: list[UnitOfWork] = []
        if not rest:
            return failures
        async with self._pool.acquire() as conn, conn.transaction():
            for item in rest:
                try:
                    async with conn.transaction():
                        if not await conn.fetchval(
                            INSERT_INBOX_ONE, self.name, item.envelope.event_id
                        ):
                            duplicates += 1
                            continue
                        uow = UnitOfWork(conn=conn, service=self.name, correlation_id="")
                        uow = uow.caused_by(item.envelope)
                        await self._run_handler(uow, item)
                        await uow.flush()
                        await conn.execute("SELECT 1")  # raises if the handler left it aborted
                        handled += 1
                        ran.append(item)
                        committed.append(uow)
                except Exception as exc:
                    if _is_infrastructure(exc):
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

    async def _run_handler(self, uow: UnitOfWork, item: _Item) -> None:
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
        self, uow: UnitOfWork, handler: BatchHandler, run: list[_Item]
    ) -> None:
        deliveries = [(uow.caused_by(i.envelope), i.envelope, i.payload) for i in run]
        spans = _batch_spans(self.name, run, deliveries)  # none unless an event is traced
        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(
                event_type=run[0].envelope.event_type, events=len(run)
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

    # -- settling: retry ladder, parking lot, acks ---------------------------------------------
    async def _settle(
        self,
        batch: list[AbstractIncomingMessage],
        failures: list[tuple[_Item, BaseException]],
        to_park: list[tuple[AbstractIncomingMessage, str]],
    ) -> None:
        now = datetime.now(UTC).isoformat()
        outgoing: list[tuple[str, aio_pika.Message]] = []
        sources: list[AbstractIncomingMessage] = []
        for item, exc in failures:
            msg = item.message
            attempt = header_int(msg.headers, H_ATTEMPT) + 1
            error = f"{type(exc).__name__}: {exc}"[:1_000]
            env = item.envelope
            self.metrics.failed(env.event_type)
            if attempt < self.queues.max_attempts:
                outgoing.append((self.queues.retry(attempt), _redirected(msg, attempt, error, now)))
                self.stats.retried += 1
                self.metrics.retried(env.event_type)
                log.warning(
                    "consumer.retry",
                    consumer=self.name,
                    event_type=env.event_type,
                    event_id=str(env.event_id),
                    correlation_id=env.correlation_id,
                    causation_id=env.causation_id,
                    trace_id=tracing.trace_id_of(env.traceparent),
                    attempt=attempt,
                    error=error,
                )
            else:
                outgoing.append(
                    (self.queues.parked, _redirected(msg, attempt, error, now, park_by=self.name))
                )
                self.stats.parked += 1
                self.metrics.parked(env.event_type, "handler_failed")
                log.error(
                    "consumer.parked",
                    consumer=self.name,
                    event_type=env.event_type,
                    event_id=str(env.event_id),
                    correlation_id=env.correlation_id,
                    causation_id=env.causation_id,
                    trace_id=tracing.trace_id_of(env.traceparent),
                    attempts=attempt,
                    error=error,
                )
            sources.append(msg)
        for msg, error in to_park:
            attempt = header_int(msg.headers, H_ATTEMPT) + 1
            outgoing.append(
                (self.queues.parked, _redirected(msg, attempt, error, now, park_by=self.name))
            )
            sources.append(msg)
            self.stats.parked += 1
            self.metrics.parked(msg.type, "rejected")
            log.error(
                "consumer.parked_at_once",
                consumer=self.name,
                event_type=msg.type,
                event_id=msg.message_id,
                correlation_id=msg.correlation_id,
                error=error[:300],
            )

        results = await self._publisher.publish_many(outgoing, to_queue=True) if outgoing else []
        unsettled = {id(m) for m, err in zip(sources, results, strict=True) if err is not None}
        try:
            if not unsettled:
                await batch[-1].ack(multiple=True)
                return
            # a retry/park publish was not confirmed: leave those to a redelivery, ack the rest
            for message in batch:
                if id(message) in unsettled:
                    await message.nack(requeue=True)
                else:
                    await message.ack()
        except (aiormq.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError) as exc:
            # the channel closed after the commit: the broker redelivers, the inbox absorbs
            log.warning("consumer.ack_lost", consumer=self.name, error=repr(exc))


def _traceparent_of(item: _Item) -> str | None:
    """The message's `traceparent` header (it names the publishing relay's span), else the
    envelope's (a message published by other means)."""
    value = item.message.headers.get("traceparent") if item.message.headers else None
    return value if isinstance(value, str) else item.envelope.traceparent


def _batch_spans(service: str, run: list[_Item], deliveries: list[Delivery]) -> list[Span]:
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


def _channel_of(message: AbstractIncomingMessage) -> Any:
    # the aiormq channel the message came on (IncomingMessage.channel raises once it is closed)
    return message._IncomingMessage__channel  # type: ignore[attr-defined]


def _redirected(
    msg: AbstractIncomingMessage, attempt: int, error: str, now: str, *, park_by: str | None = None
) -> aio_pika.Message:
    headers: dict[str, Any] = dict(msg.headers or {})
    headers[H_ATTEMPT] = attempt
    headers[H_ERROR] = error
    headers.setdefault(H_FIRST_FAILURE, now)
    headers.setdefault(H_ROUTING_KEY, msg.routing_key or msg.type or "")
    if park_by is not None:
        headers[H_PARKED_AT] = now
        headers[H_PARKED_BY] = park_by
    return aio_pika.Message(
        msg.body,
        headers=headers,
        content_type=msg.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=msg.message_id or str(uuid.uuid4()),
        type=msg.type,
        correlation_id=msg.correlation_id,
        timestamp=msg.timestamp or time.time(),
        app_id=msg.app_id,
    )
