"""The consumer: at-least-once delivery in, exactly-once effects out.

One consumer per service queue, on its own channel with a bounded prefetch (its bulkhead: a
slow or failing service never holds another's messages). It takes what has arrived, up to
the prefetch window, as one batch and handles it in ONE database transaction:

1. record every event_id in the inbox (inbox.py); ids already there are duplicates;
2. run the handler of each new event in that transaction, the events they emit going to the
   outbox in the same transaction (window.py, ADR 0003);
3. commit, and only then acknowledge the whole window with one `basic.ack(multiple=True)`.

The events whose handler failed, and the messages no handler can take, are re-published
(confirmed) where the failure policy sends them (failures.py: the retry ladder, the parking
lot) before the window is acknowledged. A database outage is not the message's fault: the
batch is held and tried again until the database is back.

A consumer starts careful: one message at a time (prefetch 1) until it is given one that was
never delivered before. A message that kills its process (a segfault, the OOM killer) comes
back with everything the process held unacknowledged, and the quorum queue counts a delivery
for each of them (ADR 0008) and puts them back at its head. Taken one at a time after the
restart, the innocent ones are handled and acknowledged before the killer comes round, and each
further crash counts against the killer alone: it is parked at the delivery limit, they are
not. With one message in flight at a time, a fresh one comes only once the returns are all
settled: then the consumer takes whole windows again.

It consumes on the aiormq channel under aio-pika's robust channel, not through
`Queue.consume`, which cost a third more CPU per delivery (ADR 0017): each delivery is a
`Received`, and the consumer itself consumes again after a reconnection, or when the broker
cancels it, with its queues declared again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustChannel
from aiormq.abc import DeliveredMessage

from eventshop.contracts import Registry
from eventshop.platform import faults
from eventshop.platform.bus.codec import direct_consumer
from eventshop.platform.bus.failures import after_handler_failure, is_infrastructure, rejected
from eventshop.platform.bus.provenance import Provenance
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.received import Received
from eventshop.platform.bus.topology import declare_service_queues
from eventshop.platform.bus.types import ConsumerStats, Subscription
from eventshop.platform.bus.window import Item, WindowRunner
from eventshop.platform.observability import tracing
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import EventMetrics

log = get_logger(__name__)


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
        provenance: Provenance,
        prefetch: int = 256,
        handler_timeout_s: float = 30.0,
    ) -> None:
        self.subscription = subscription
        self.provenance = provenance
        self.queues = subscription.queues
        self._connection = connection
        self._publisher = publisher
        self._registry = registry
        self._exchange = exchange
        self._prefetch = prefetch
        #: aio-pika's robust channel, and the aiormq channel under it that the consumer is on
        self._channel: AbstractChannel | None = None
        self._underlay: aiormq.Channel | None = None
        self._tag: str | None = None
        self._buffer: collections.deque[Received] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._detached = asyncio.Event()
        self._attaching = asyncio.Lock()
        #: the broker cancelled the consumer: its queue is declared again before consuming
        self._lost_queue = False
        self._stopping = False
        #: one message at a time until a fresh one (never delivered before) has been handled
        self.careful = True
        self.stats = ConsumerStats()
        self.metrics = EventMetrics(subscription.service)
        self._runner = WindowRunner(
            subscription,
            pool=pool,
            handler_timeout_s=handler_timeout_s,
            stats=self.stats,
            metrics=self.metrics,
        )

    @property
    def name(self) -> str:
        return self.subscription.service

    @property
    def attached(self) -> bool:
        underlay = self._underlay
        return (
            self._tag is not None
            and underlay is not None
            and not underlay.is_closed
            and self._tag in underlay.consumers
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await declare_service_queues(self._connection, self._exchange, self.queues)
        # a robust channel: aio-pika re-opens it after a reconnection; the consumer on it is ours
        self._channel = await self._connection.channel()
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.add(self._on_reopen)
        self._worker = asyncio.create_task(self._work(), name=f"consumer:{self.name}")
        # under the lock: the channel's reader can hand over the first delivery before
        # `basic_consume` returns, and the worker must not leave the careful start (consume again
        # at the prefetch) before this consumer knows its tag: it would stay at prefetch 1
        async with self._attaching:
            await self._consume()
        self._keeper = asyncio.create_task(self._keep_attached(), name=f"attach:{self.name}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, finish the batch in hand; the rest is redelivered."""
        self._stopping = True
        self._detached.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(BaseException):
                await self._keeper
        # the worker may hold the lock, waiting for a broker that is away (whole windows)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0), self._attaching:
                await self._cancel_consumer()
        self._arrived.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(self._worker, timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                self._worker.cancel()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()  # unacked messages are requeued by the broker

    # -- attachment: a consumer on the aiormq channel, made again whenever it is lost ----------
    async def _consume(self) -> None:
        """Consume the service queue on the aiormq channel under the robust one, as it is now
        (ADR 0017)."""
        channel = self._channel
        assert channel is not None
        if isinstance(channel, AbstractRobustChannel):
            await channel.ready()  # re-opened and restored, after a reconnection
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        if self._on_cancelled not in underlay.on_consumer_cancel_callbacks:
            underlay.on_consumer_cancel_callbacks.add(self._on_cancelled)
        # the prefetch on this very channel before its consumer: one made before it, on a
        # channel just re-opened, would be sent the whole queue
        await underlay.basic_qos(prefetch_count=1 if self.careful else self._prefetch)
        ok = await underlay.basic_consume(self.queues.main, direct_consumer(self._take))
        self._underlay, self._tag = underlay, ok.consumer_tag

    async def _cancel_consumer(self) -> None:
        underlay, tag, self._tag = self._underlay, self._tag, None
        if underlay is not None and tag is not None and not underlay.is_closed:
            with contextlib.suppress(Exception):
                await underlay.basic_cancel(tag)

    def _on_reopen(self, *_: Any) -> None:
        # aio-pika re-opened the channel after a reconnection: the consumer was the old one's
        self._detached.set()

    def _on_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        # the broker cancelled the consumer (its queue deleted, say): declare it and consume again
        if frame.consumer_tag is not None and frame.consumer_tag == self._tag:
            log.warning("consumer.cancelled_by_broker", consumer=self.name)
            self._lost_queue = True
            self._detached.set()

    async def _keep_attached(self) -> None:
        """Consume again whenever the consumer is lost: woken by a re-opened channel or by the
        broker's cancel, and looking every second besides; backs off while it fails."""
        backoff = 0.1
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._detached.wait(), 1.0)
            self._detached.clear()
            if self._stopping or self.attached:
                continue
            async with self._attaching:
                if self._stopping or self.attached:
                    continue
                try:
                    if self._lost_queue:
                        await declare_service_queues(self._connection, self._exchange, self.queues)
                        self._lost_queue = False
                    await self._consume()
                except Exception as exc:  # the channel is being re-opened, or the broker is away
                    log.warning("consumer.attach_failed", consumer=self.name, error=repr(exc))
                    self._detached.set()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            backoff = 0.1
            log.info("consumer.attached_again", consumer=self.name)

    def _take(self, message: DeliveredMessage) -> None:
        """A delivery, handed over in the channel's reader (codec.direct_consumer)."""
        self._buffer.append(Received(message))
        self._arrived.set()

    # -- the batch loop ------------------------------------------------------------------------
    async def _work(self) -> None:
        while not self._stopping:
            if not self._buffer:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self.careful and not self._buffer[0].redelivered:
                await self._take_whole_windows()
            if (
                self.subscription.linger_s
                and not self.careful
                and len(self._buffer) < self._prefetch
            ):
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

    async def _take_whole_windows(self) -> None:
        """Leave the careful start: the prefetch is a consumer's from its basic.consume on, so
        the consumer is cancelled and made again on the channel with the whole window. The
        message in hand, and any delivered meanwhile, stay unacknowledged and are handled."""
        self.careful = False
        async with self._attaching:
            if self._channel is None or not self.attached or self._stopping:
                return
            try:
                await self._cancel_consumer()
                await self._consume()
            except Exception as exc:  # the channel died: the consumer is made again on the next
                log.warning("consumer.whole_windows_failed", consumer=self.name, error=repr(exc))
                self._detached.set()
                return
        log.info("consumer.whole_windows", consumer=self.name, prefetch=self._prefetch)

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

    def _take_batch(self) -> list[Received]:
        """Up to a prefetch window of buffered messages (one while careful), all from the same
        channel."""
        first = self._buffer.popleft()
        batch = [first]
        channel = first.channel
        while self._buffer and len(batch) < (1 if self.careful else self._prefetch):
            if self._buffer[0].channel is not channel:
                break  # delivered before a reconnect: tags of two channels never mix in an ack
            batch.append(self._buffer.popleft())
        return batch

    async def _handle_batch(self, batch: list[Received]) -> None:
        self.stats.batches += 1
        items: list[Item] = []
        to_park: list[tuple[Received, str]] = []
        for message in batch:
            try:
                envelope, payload = self._registry.decode(message.body)
            except Exception as exc:  # ContractError, or an upcaster's bug: no retry fixes it
                to_park.append((message, f"{type(exc).__name__}: {exc}"))
                continue
            if (refusal := self.provenance.refusal(message, envelope.event_type)) is not None:
                to_park.append((message, refusal))
                continue
            if self.subscription.handler_for(envelope.event_type) is None:
                to_park.append((message, f"no handler in {self.name} for {envelope.event_type}"))
                continue
            items.append(Item(message, envelope, payload))

        failures = await self._apply_until_done(items, batch)
        if failures is None:
            return  # the channel died while the database was away: the broker redelivers
        faults.point("consumer.before_ack")
        await self._settle(batch, failures, to_park)

    async def _apply_until_done(
        self, items: list[Item], batch: list[Received]
    ) -> list[tuple[Item, BaseException]] | None:
        """The window's handlers in one transaction (window.py), held while the database is
        away; None if the channel died meanwhile."""
        backoff = 0.1
        while True:
            try:
                if not items:
                    return []
                return await self._runner.run(items)
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                if batch[0].channel.is_closed:
                    return None
                log.warning("consumer.database_unavailable", consumer=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # -- settling: retry ladder, parking lot, acks ---------------------------------------------
    async def _settle(
        self,
        batch: list[Received],
        failures: list[tuple[Item, BaseException]],
        to_park: list[tuple[Received, str]],
    ) -> None:
        now = datetime.now(UTC).isoformat()
        outgoing: list[tuple[str, aio_pika.Message]] = []
        sources: list[Received] = []
        for item, exc in failures:
            msg = item.message
            step = after_handler_failure(msg, exc, self.queues, consumer=self.name, now=now)
            env = item.envelope
            self.metrics.failed(env.event_type)
            outgoing.append((step.queue, step.message))
            about = {
                "consumer": self.name,
                "event_type": env.event_type,
                "event_id": str(env.event_id),
                "correlation_id": env.correlation_id,
                "causation_id": env.causation_id,
                "trace_id": tracing.trace_id_of(env.traceparent),
                "error": step.error,
            }
            if not step.parked:
                self.stats.retried += 1
                self.metrics.retried(env.event_type)
                log.warning("consumer.retry", **about, attempt=step.attempt)
            else:
                self.stats.parked += 1
                self.metrics.parked(env.event_type, "handler_failed")
                log.error("consumer.parked", **about, attempts=step.attempt)
            sources.append(msg)
        for msg, error in to_park:
            step = rejected(msg, error, self.queues, consumer=self.name, now=now)
            outgoing.append((step.queue, step.message))
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
