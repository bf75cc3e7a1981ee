"""aio-pika: publishing with confirms and consuming, with the platform's spans and with
opentelemetry-instrumentation-aio-pika.

The instrumentation wraps `Exchange.publish` and `Queue.consume`'s callback only. The relay
publishes through `Publisher.publish_prepared` (one socket write per batch, ADR 0001), which it
never sees; so the publish figures come in two pairs: the relay's batch path untraced and with
its PRODUCER spans (`relay._publish_spans`, the real code), and `Exchange.publish` one message
at a time without and with the instrumentation (each under its row's trace context, as a relay
adopting it would have to attach). Consuming: a callback that acks every `ACK_EVERY` messages,
alone, with the consumer's `handling_span` around it (what the platform's window does per
event), or wrapped by the instrumentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider

from eventshop.bench.instrumentation import Group, Run, Variant
from eventshop.bench.instrumentation.sql import instrumented, official
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.relay import _messages, _publish_spans
from eventshop.platform.observability import tracing

SERVICE = "bench-instrumentation"
EVENT_TYPE = "bench.pinged"
#: a sampled remote parent, as an outbox row written under a traced request carries
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BATCH = 100
ACK_EVERY = 100
BODY = b'{"payload":"' + b"x" * 280 + b'"}'


def rows(n: int, traced: bool) -> list[dict[str, Any]]:
    """Outbox rows as the relay reads them."""
    now = datetime.now(UTC)
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": EVENT_TYPE,
            "correlation_id": str(uuid.uuid4()),
            "causation_id": None,
            "traceparent": TRACEPARENT if traced else None,
            "occurred_at": now,
            "schema_version": 1,
            "body": BODY,
        }
        for _ in range(n)
    ]


def message(row: dict[str, Any]) -> aio_pika.Message:
    headers: dict[str, Any] = {"schema_version": 1}
    if row["traceparent"]:
        headers["traceparent"] = row["traceparent"]
    return aio_pika.Message(
        BODY,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=row["event_id"],
        type=row["event_type"],
        correlation_id=row["correlation_id"],
        timestamp=row["occurred_at"],
        headers=headers,
        app_id=SERVICE,
    )


class Amqp:
    """A topic exchange and a queue bound to it, of this run alone (deleted at the end)."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.exchange_name = f"eventshop.bench.instr.{tag}"
        self.queue_name = f"bench_instr_{tag}"

    async def open(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        self.publisher = Publisher(self.connection, self.exchange_name)
        await self.publisher.start()
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.get_exchange(self.exchange_name)
        self.queue = await self.channel.declare_queue(self.queue_name, durable=True)
        await self.queue.bind(self.exchange, "#")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.queue.delete(if_unused=False, if_empty=False)
            await self.exchange.delete()
        await self.connection.close()

    async def publish_batches(self, batch_rows: Sequence[dict[str, Any]], spans: bool) -> None:
        for i in range(0, len(batch_rows), BATCH):
            chunk = batch_rows[i : i + BATCH]
            made = _publish_spans(SERVICE, cast(Any, chunk)) if spans else []
            messages = _messages(cast(Any, chunk), made, SERVICE, self.publisher.user_id)
            results = await self.publisher.publish_prepared(messages)
            for _, span in made:
                span.end()
            if any(results):
                raise RuntimeError(f"not confirmed: {next(r for r in results if r)!r}")

    async def publish_singly(self, single_rows: Sequence[dict[str, Any]]) -> None:
        async def one(row: dict[str, Any]) -> None:
            token = otel_context.attach(
                tracing.context_of(row["traceparent"]) or otel_context.Context()
            )
            try:
                await self.exchange.publish(message(row), row["event_type"])
            finally:
                otel_context.detach(token)

        for i in range(0, len(single_rows), BATCH):
            await asyncio.gather(*(one(r) for r in single_rows[i : i + BATCH]))

    async def consume(self, n: int, spans: bool) -> None:
        done = asyncio.get_running_loop().create_future()
        seen = 0

        async def on_message(msg: AbstractIncomingMessage) -> None:
            nonlocal seen
            if spans:
                headers = msg.headers or {}
                traceparent = headers.get("traceparent")
                with tracing.handling_span(
                    SERVICE,
                    traceparent=traceparent if isinstance(traceparent, str) else None,
                    event_id=msg.message_id or "",
                    event_type=msg.type or "",
                    correlation_id=msg.correlation_id or "",
                    causation_id=None,
                ):
                    pass
            seen += 1
            if seen % ACK_EVERY == 0 or seen == n:
                await msg.ack(multiple=True)
            if seen == n and not done.done():
                done.set_result(None)

        queue: AbstractQueue = self.queue
        tag = await queue.consume(on_message)
        try:
            await asyncio.wait_for(done, 120)
        finally:
            await queue.cancel(tag)


async def amqp_group(
    url: str, provider: TracerProvider, operations: int, tag: str
) -> tuple[Group, Amqp]:
    amqp = Amqp(url, tag)
    await amqp.open()
    instrumentor, why = official("opentelemetry.instrumentation.aio_pika", "AioPikaInstrumentor")
    group = Group("amqp", operations)

    def publisher(name: str, traced: bool, batch: bool, official_on: bool) -> Variant:
        @contextlib.asynccontextmanager
        async def prepare(n: int) -> AsyncIterator[Run]:
            made = rows(n, traced)

            async def run() -> None:
                if batch:
                    await amqp.publish_batches(made, spans=traced)
                else:
                    await amqp.publish_singly(made)

            with instrumented(instrumentor, provider) if official_on else contextlib.nullcontext():
                yield run
            await amqp.queue.purge()

        base = None if name.endswith(".none") else name.rsplit(".", 1)[0] + ".none"
        return Variant(name, prepare, base)

    def consumer(name: str, spans: bool, official_on: bool) -> Variant:
        @contextlib.asynccontextmanager
        async def prepare(n: int) -> AsyncIterator[Run]:
            await amqp.publish_batches(rows(n, True), spans=False)  # traced, no span made here

            async def run() -> None:
                await amqp.consume(n, spans)

            with instrumented(instrumentor, provider) if official_on else contextlib.nullcontext():
                yield run

        return Variant(name, prepare, None if name == "consume.none" else "consume.none")

    group.variants += [
        publisher("publish.batch.none", traced=False, batch=True, official_on=False),
        publisher("publish.batch.ours", traced=True, batch=True, official_on=False),
        publisher("publish.single.none", traced=True, batch=False, official_on=False),
    ]
    if instrumentor is not None:
        group.variants.append(
            publisher("publish.single.official", traced=True, batch=False, official_on=True)
        )
    group.variants += [
        consumer("consume.none", False, False),
        consumer("consume.ours", True, False),
    ]
    if instrumentor is not None:
        group.variants.append(consumer("consume.official", False, True))
    if why is not None:
        group.missing["opentelemetry-instrumentation-aio-pika"] = why
    return group, amqp
