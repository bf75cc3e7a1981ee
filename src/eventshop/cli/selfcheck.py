"""The bus self-check: events through the real broker and database, and what happened to them.

A producer writes pings through its outbox (one of them in a transaction that rolls back);
the relay publishes them; a consumer handles each ping in a transaction with its inbox row and
emits a pong through its own outbox. One ping is delivered a second time (a duplicate), one
v1 ping is upcast, one malformed body is parked. The check passes when every committed ping
had exactly one effect, the rolled-back one none, and the malformed one sits in the parking lot.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import asyncpg

from eventshop.contracts import Envelope, new_envelope, registry
from eventshop.contracts.selfcheck import Pinged, Ponged
from eventshop.platform.bus import Subscription, UnitOfWork
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.parking import list_parked, purge_parked
from eventshop.platform.bus.topology import ServiceQueues, direct_exchange_of
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate
from eventshop.platform.settings import PlatformSettings

PRODUCER, CONSUMER = "selfcheck_producer", "selfcheck"
#: the check's own topic exchange: on the platform's, every "#" subscriber (the archive) would
#: get each ping and pong, and park it (no service produces them)
EXCHANGE = "eventshop.selfcheck"
RETRY_MS = (200, 500)


@dataclass
class SelfCheckReport:
    pings_committed: int
    pings_rolled_back: int
    effects: int
    distinct_effects: int
    duplicates_absorbed: int
    upcast_handled: bool
    parked: int
    pongs_published: int
    pongs_received: int
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.effects == self.pings_committed + 1  # + the upcast v1 ping
            and self.distinct_effects == self.effects
            and self.duplicates_absorbed >= 1
            and self.upcast_handled
            and self.parked == 1
            and self.pongs_published == self.effects
            and self.pongs_received == self.pongs_published
        )


async def _reset(settings: PlatformSettings) -> None:
    """Start from nothing: the two schemas, and the two services' queues with whatever a run
    that failed left in them (its pings and pongs would count as this run's)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        for schema in (PRODUCER, CONSUMER):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    broker = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await broker.channel()
        for service in (PRODUCER, CONSUMER):
            for name in ServiceQueues(service, (), RETRY_MS).all_names:
                await channel.queue_delete(name)  # a queue that is not there: nothing to do
    finally:
        await broker.close()


async def run_selfcheck(
    settings: PlatformSettings, pings: int = 200, say: Callable[[str], object] = print
) -> SelfCheckReport:
    # the check counts what its relays sent by their rows: kept, whatever the platform does
    settings = settings.model_copy(
        update={
            "exchange": EXCHANGE,
            "retention_outbox_sent_s": settings.retention_outbox_sent_s or 3_600.0,
        }
    )
    await _reset(settings)
    started = time.perf_counter()
    prod_pool = await create_pool(settings.database_url, PRODUCER)
    cons_pool = await create_pool(settings.database_url, CONSUMER)
    await migrate(prod_pool, [PLATFORM_MIGRATIONS])
    await migrate(cons_pool, [PLATFORM_MIGRATIONS])
    async with cons_pool.acquire() as c:
        await c.execute("CREATE TABLE pongs (seq int NOT NULL, event_id uuid PRIMARY KEY)")
    async with prod_pool.acquire() as c:
        await c.execute("CREATE TABLE pong_receipts (seq int NOT NULL, event_id uuid PRIMARY KEY)")

    async def on_pong(uow: UnitOfWork, env: Envelope, pong: Ponged) -> None:
        await uow.conn.execute(
            "INSERT INTO pong_receipts (seq, event_id) VALUES ($1, $2)", pong.seq, env.event_id
        )

    async def on_ping(uow: UnitOfWork, env: Envelope, ping: Pinged) -> None:
        await uow.conn.execute(
            "INSERT INTO pongs (seq, event_id) VALUES ($1, $2)", ping.seq, env.event_id
        )
        uow.emit(Ponged(seq=ping.seq), aggregate_id=env.aggregate_id)

    consumer = BusNode(
        service=CONSUMER,
        schema=CONSUMER,
        pool=cons_pool,
        registry=registry,
        settings=settings,
        subscription=Subscription(CONSUMER, {"selfcheck.pinged": on_ping}, RETRY_MS),
    )
    producer = BusNode(
        service=PRODUCER,
        schema=PRODUCER,
        pool=prod_pool,
        registry=registry,
        settings=settings,
        subscription=Subscription(PRODUCER, {"selfcheck.ponged": on_pong}, RETRY_MS),
    )
    await consumer.start()
    await producer.start()
    assert consumer.connection is not None and producer.connection is not None
    assert consumer.consumer is not None and producer.consumer is not None
    assert producer.publisher is not None
    await purge_parked(consumer.connection, consumer.consumer.queues)

    await purge_parked(producer.connection, producer.consumer.queues)
    say(f"writing {pings} pings through the producer's outbox (and 1 in a rolled-back transaction)")
    correlation = str(uuid.uuid4())
    async with UnitOfWork.begin(prod_pool, service=PRODUCER, correlation_id=correlation) as uow:
        for seq in range(pings):
            uow.emit(Pinged(seq=seq, note="hello"), aggregate_id=f"ping-{seq}")
    try:
        async with UnitOfWork.begin(prod_pool, service=PRODUCER) as uow:
            uow.emit(Pinged(seq=10_000), aggregate_id="never")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass

    say("sending a duplicate of ping 0, a v1 ping to upcast, and a malformed body")
    await _wait(lambda: _count(prod_pool, "SELECT count(*) FROM outbox_sent"), pings)
    async with prod_pool.acquire() as c:
        first = await c.fetchrow("SELECT body FROM outbox_sent ORDER BY id LIMIT 1")
    dup = registry.decode(first["body"])[0]
    v1 = new_envelope(
        "selfcheck.pinged", 1, "ping-v1", {"number": pings}, correlation_id=correlation
    )
    await producer.publisher.publish("selfcheck.pinged", message_from_envelope(dup))
    await producer.publisher.publish("selfcheck.pinged", message_from_envelope(v1))
    # straight to the consumer's queue, through the consumer's own direct exchange
    await producer.publisher.publish(
        CONSUMER,
        aio_pika.Message(b"{not json", message_id=str(uuid.uuid4()), type="selfcheck.pinged"),
        via=direct_exchange_of(CONSUMER),
    )

    effects = await _wait(lambda: _count(cons_pool, "SELECT count(*) FROM pongs"), pings + 1)
    await _wait(lambda: _count(cons_pool, "SELECT count(*) FROM outbox_sent"), effects)
    await _wait(lambda: _parked(consumer), 1)
    async with cons_pool.acquire() as c:
        distinct = await c.fetchval("SELECT count(DISTINCT seq) FROM pongs")
        upcast = await c.fetchval("SELECT count(*) FROM pongs WHERE seq = $1", pings)
        pongs = await c.fetchval("SELECT count(*) FROM outbox_sent")
    receipts = await _wait(lambda: _count(prod_pool, "SELECT count(*) FROM pong_receipts"), pongs)
    parked = await _parked(consumer)
    report = SelfCheckReport(
        pings_committed=pings,
        pings_rolled_back=1,
        effects=effects,
        distinct_effects=distinct,
        duplicates_absorbed=consumer.consumer.stats.duplicates if consumer.consumer else 0,
        upcast_handled=upcast == 1,
        parked=parked,
        pongs_published=pongs,
        pongs_received=receipts,
        seconds=time.perf_counter() - started,
    )
    await producer.stop()
    await consumer.stop()
    await prod_pool.close()
    await cons_pool.close()
    return report


async def _count(pool: asyncpg.Pool, sql: str) -> int:
    async with pool.acquire() as c:
        return int(await c.fetchval(sql))


async def _parked(node: BusNode) -> int:
    assert node.connection is not None and node.consumer is not None
    return len(await list_parked(node.connection, node.consumer.queues))


async def _wait(probe: Callable[[], Awaitable[int]], target: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while value < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await probe()
    return int(value)
