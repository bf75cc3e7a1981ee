"""Per-aggregate ordering under replicas: two inventory consumers (two replicas: a bus node
each, a pool each, one schema, one queue on the real RabbitMQ) take an order's order.created and
its order.cancelled, published back to back, so the two events of one order are often handled by
two replicas at once, in either order, with fifty orders competing for twenty units of one sku.
What keeps the outcome right (docs/DESIGN.md §8): the window's stock rows locked first (ADR
0011), the reservation row per order (a cancellation that comes first leaves a tombstone, and a
late order.created then reserves nothing) and the inbox. Afterwards no cancelled order holds
stock, stock is conserved and never oversold, every event was handled once, nothing failed or
was parked, and both replicas did some of the work."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import aio_pika
import asyncpg
import pytest

from eventshop.contracts import EventPayload, new_envelope, registry
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.types import Subscription
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import create_pool
from eventshop.platform.service import AnyContext
from eventshop.platform.settings import PlatformSettings
from eventshop.services.inventory.service import definition
from tests.integration.services.test_inventory import (
    assert_conserved,
    cancelled,
    created,
    levels,
    outbox,
    restock,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

SERVICE = "inventory"
MIGRATIONS = "eventshop.services.inventory.migrations"

ORDERS = 50
UNITS = 20


@pytest.fixture
async def replicas(
    schema_pool: tuple[str, asyncpg.Pool], context: AnyContext, settings: PlatformSettings
) -> AsyncIterator[list[BusNode]]:
    """Two replicas of inventory consuming one queue, as `eventshop up --replicas` runs them."""
    schema, _ = schema_pool
    queue = f"inventory_{uuid.uuid4().hex[:8]}"
    nodes: list[BusNode] = []
    pools: list[asyncpg.Pool] = []
    for _ in range(2):
        pool = await create_pool(settings.database_url, schema, max_size=4)
        pools.append(pool)
        ctx = replace(context, pool=pool)
        subscription = Subscription(
            queue,
            definition.bind(ctx),
            tuple(settings.retry_delays_ms),
            lock_first=definition.lock_first,
        )
        node = BusNode(
            service=queue,
            schema=schema,
            pool=pool,
            registry=registry,
            settings=replace_prefetch(settings),
            subscription=subscription,
        )
        await node.start()
        nodes.append(node)
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
        for pool in pools:
            await pool.close()
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queues = nodes[0].subscription.queues  # type: ignore[union-attr]
            retries = [queues.retry(i + 1) for i in range(len(queues.retry_delays_ms))]
            for name in (queues.main, queues.parked, *retries):
                await channel.queue_delete(name)


def replace_prefetch(settings: PlatformSettings) -> PlatformSettings:
    """Small windows, so both replicas get work while the events are still coming."""
    return settings.model_copy(update={"prefetch": 8})


async def publish(node: BusNode, events: list[EventPayload]) -> None:
    assert node.publisher is not None
    for event in events:
        aggregate = str(getattr(event, "order_id", "x"))
        env = new_envelope(
            event.event_type, event.schema_version, aggregate, event.model_dump(mode="json")
        )
        await node.publisher.publish(env.event_type, message_from_envelope(env))


async def test_two_replicas_racing_on_one_orders_events_and_one_sku_keep_it_right(
    replicas: list[BusNode], context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "HOT", UNITS)
    orders = [f"order-{uuid.uuid4().hex[:10]}" for _ in range(ORDERS)]
    doomed = set(orders[::2])  # every other order is cancelled while it is being created
    events: list[EventPayload] = []
    for order in orders:
        events.append(created(order, ("HOT", 1)))
        if order in doomed:
            events.append(cancelled(order, ("HOT", 1)))
    await publish(replicas[0], events)

    def handled() -> int:
        return sum(n.consumer.stats.handled for n in replicas if n.consumer is not None)

    await eventually(handled, len(events), timeout=30, interval=0.05, what="every event handled")

    statuses = dict(
        await pool.fetch(
            "SELECT order_id, status FROM reservations WHERE order_id = ANY($1)", orders
        )
    )
    assert set(statuses) == set(orders)
    for order in doomed:  # a cancelled order holds nothing, whichever event came first
        assert statuses[order] in ("released", "rejected", "cancelled_before_reserve"), order
    for order in set(orders) - doomed:
        assert statuses[order] in ("reserved", "rejected"), order
    held = sum(1 for s in statuses.values() if s == "reserved")
    on_hand, reserved, sold, restocked = await levels(pool, "HOT")
    assert (reserved, sold, restocked) == (held, 0, UNITS)
    assert on_hand == UNITS - held >= 0  # never oversold
    await assert_conserved(pool)

    # every fact published once: one answer per order.created that reserved or was refused,
    # one release per order whose reservation was given back
    published = Counter((t, getattr(p, "order_id", None)) for t, p in await outbox(pool))
    assert all(n == 1 for n in published.values()), published
    released = {o for (t, o) in published if t == "inventory.released"}
    assert released == {o for o, s in statuses.items() if s == "released"}

    stats = [n.consumer.stats for n in replicas if n.consumer is not None]
    assert all(s.handled > 0 for s in stats), "one replica did all the work: no race was run"
    assert sum(s.duplicates for s in stats) == 0
    assert sum(s.retried + s.parked for s in stats) == 0, "a window failed (a deadlock?)"
