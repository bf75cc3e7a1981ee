"""Helpers of the bus integration tests: bus nodes that clean up after themselves, and a tap
queue to look at messages as they are on the wire (polling with a deadline is
`tests.support.polling.eventually`).

Nothing here fakes RabbitMQ or PostgreSQL: nodes are real `BusNode`s in random schemas with
random service names; queues are deleted and nodes stopped when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from eventshop.contracts import Envelope, new_envelope, registry
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus import Handler, Subscription, UnitOfWork
from eventshop.platform.bus.consumer import Consumer
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.outbox import OUTBOX_COLUMNS
from eventshop.platform.bus.parking import ParkedMessage, list_parked
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues, declare_exchange, queue_depth
from eventshop.platform.db import migrate
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory

PINGED = "selfcheck.pinged"
PONGED = "selfcheck.ponged"
TEST_MIGRATIONS = "tests.support.migrations"  # the `effects` table: one row per handled event
_EVENT_COLUMNS = ", ".join(("id", *OUTBOX_COLUMNS))
#: every event a schema emitted, whether its relay has sent it yet or not: the rows still in
#: the outbox and those it moved to outbox_sent (ADR 0021); `SELECT .. FROM {EMITTED}`
EMITTED = (
    f"(SELECT {_EVENT_COLUMNS} FROM outbox UNION ALL SELECT {_EVENT_COLUMNS} FROM outbox_sent)"
    " AS emitted"
)


async def fetchval(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def fetch(pool: asyncpg.Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(sql, *args))


async def effects_of(pool: asyncpg.Pool, event_id: uuid.UUID | str) -> int:
    """How many `effects` rows an event left (exactly-once means 1)."""
    return int(await fetchval(pool, "SELECT count(*) FROM effects WHERE event_id = $1", event_id))


async def record_effect(uow: UnitOfWork, env: Envelope, ping: Pinged) -> None:
    """The canonical effect: one row in `effects`, in the handler's transaction."""
    await uow.conn.execute(
        "INSERT INTO effects (event_id, seq) VALUES ($1, $2)", env.event_id, ping.seq
    )


def ping(seq: int, note: str = "", aggregate_id: str | None = None) -> Envelope:
    """A v2 `selfcheck.pinged` envelope, not written anywhere."""
    return new_envelope(
        PINGED, 2, aggregate_id or f"agg-{seq}", Pinged(seq=seq, note=note).model_dump()
    )


async def commit_pings(
    pool: asyncpg.Pool, service: str, pings: Sequence[Pinged], *, aggregate_id: str = "agg"
) -> list[Envelope]:
    """Write pings through a producer's outbox in one committed unit of work."""
    async with UnitOfWork.begin(pool, service=service) as uow:
        return [uow.emit(p, aggregate_id=aggregate_id) for p in pings]


class Tap:
    """An exclusive queue bound to some routing keys: every copy the exchange routes to it."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.messages: list[AbstractIncomingMessage] = []

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.messages.append(message)

    def by_id(self, message_id: str) -> list[AbstractIncomingMessage]:
        return [m for m in self.messages if m.message_id == message_id]


class Bus:
    """Makes bus nodes for one test; stops them and deletes their queues at the end."""

    def __init__(
        self,
        settings: PlatformSettings,
        make_schema: SchemaFactory,
    ) -> None:
        self.settings = settings
        self._make_schema = make_schema
        self.nodes: list[BusNode] = []
        self._queues: list[ServiceQueues] = []
        self._connection: AbstractConnection | None = None
        self._publisher: Publisher | None = None

    @staticmethod
    def service_name(prefix: str = "svc") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def connection(self) -> AbstractConnection:
        """A plain connection of the test's own (taps, parking-lot operations, raw declares)."""
        if self._connection is None:
            self._connection = await aio_pika.connect(self.settings.amqp_url)
        return self._connection

    async def publisher(self) -> Publisher:
        """A confirmed publisher on the test's own connection."""
        if self._publisher is None:
            self._publisher = Publisher(
                await self.connection(), self.settings.exchange, confirm_timeout_s=5.0
            )
            await self._publisher.start()
        return self._publisher

    async def node(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        service: str | None = None,
        settings: PlatformSettings | None = None,
        start: bool = True,
        linger_s: float = 0.0,
        inbox: bool = True,
        pool_options: Mapping[str, Any] | None = None,
    ) -> tuple[BusNode, asyncpg.Pool]:
        """A BusNode in a fresh migrated schema (with `effects`); consuming if `handlers`;
        `pool_options` go to `create_pool`."""
        s = settings or self.settings
        service = service or self.service_name()
        schema, pool = await self._make_schema(service, **(pool_options or {}))
        await migrate(pool, [TEST_MIGRATIONS])
        subscription = None
        if handlers is not None:
            subscription = Subscription(
                service, dict(handlers), tuple(s.retry_delays_ms), linger_s=linger_s, inbox=inbox
            )
            self._queues.append(subscription.queues)
        node = BusNode(
            service=service,
            schema=schema,
            pool=pool,
            registry=registry,
            settings=s,
            subscription=subscription,
        )
        self.nodes.append(node)
        if start:
            await node.start()
        return node, pool

    async def tap(self, *routing_keys: str) -> Tap:
        """Bind an exclusive auto-delete queue to the events exchange: a copy of each message."""
        channel = await (await self.connection()).channel()
        exchange = await declare_exchange(channel, self.settings.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        tap = Tap(queue)
        await queue.consume(tap._on_message)
        return tap

    async def queue_depth(self, name: str) -> tuple[int, int]:
        """(messages ready, consumers) of an existing queue, on a channel of the test's own."""
        channel = await (await self.connection()).channel()
        try:
            return await queue_depth(channel, name)
        finally:
            await channel.close()

    def delete_at_end(self, queues: ServiceQueues) -> None:
        """Queues a test declared by itself, to delete like the nodes' ones."""
        self._queues.append(queues)

    async def aclose(self) -> None:
        """Stop every node (all of them, even if one fails to stop), then delete the queues."""
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                await node.stop()
            except Exception as exc:
                errors.append(exc)
        connection = await self.connection()
        try:
            for q in self._queues:
                retries = [q.retry(i + 1) for i in range(len(q.retry_delays_ms))]
                for name in [q.main, q.parked, *retries]:
                    channel = await connection.channel()
                    try:
                        await channel.queue_delete(name)
                    except aiormq.exceptions.AMQPError:  # a queue never declared
                        pass
                    finally:
                        if not channel.is_closed:
                            await channel.close()
        finally:
            await connection.close()
        if errors:
            raise errors[0]


def consumer_of(node: BusNode) -> Consumer:
    assert node.consumer is not None, "the node was built without handlers"
    return node.consumer


async def parked(
    node: BusNode, where: Callable[[ParkedMessage], bool] | None = None
) -> list[ParkedMessage]:
    assert node.connection is not None
    return await list_parked(node.connection, consumer_of(node).queues, where=where)


async def parked_count(node: BusNode) -> int:
    return len(await parked(node))
