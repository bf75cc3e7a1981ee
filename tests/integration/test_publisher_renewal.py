"""A nack makes the bus's publisher take a new channel (ADR 0023): on RabbitMQ 3.10 a channel
that first published to a quorum queue while the queue's leader node was down nacks that queue
for as long as the node stays down, so the channel is not reused after a nack. The cluster's
case is in tests/e2e/test_cluster.py; here the mechanics, on the machine's broker: a queue that
refuses what goes beyond one message (`x-overflow: reject-publish`) nacks on demand.

Real: RabbitMQ.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.settings import PlatformSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(settings: PlatformSettings) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(settings.amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


def one(body: bytes) -> list[tuple[str, aio_pika.Message]]:
    return [("probe.one", aio_pika.Message(body, delivery_mode=2))]


async def test_a_nacked_batch_gets_the_publisher_a_new_channel_and_the_next_goes_out(
    connection: AbstractRobustConnection,
) -> None:
    name = f"probe-renewal-{secrets.token_hex(4)}"
    admin = await connection.channel()
    exchange = await admin.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await admin.declare_queue(
        name, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await queue.bind(exchange, "#")
    publisher = Publisher(connection, name)
    await publisher.start()
    try:
        first = publisher._channel
        assert await publisher.publish_many(one(b"1")) == [None]
        assert publisher.renewed == 0 and publisher._channel is first

        # the queue is full: the broker nacks, and the publisher leaves that channel
        [refused] = await publisher.publish_many(one(b"2"))
        assert isinstance(refused, aio_pika.exceptions.DeliveryError)
        assert publisher.renewed == 1
        second = publisher._channel
        assert second is not first and first is not None and first.is_closed

        # two batches nacked on the same channel at once: one new channel, not two
        results = await asyncio.gather(
            publisher.publish_many(one(b"3")), publisher.publish_many(one(b"4"))
        )
        assert all(error is not None for [error] in results), results
        assert publisher.renewed == 2 and publisher._channel is not second

        # room again: the new channel publishes
        await queue.purge()
        assert await publisher.publish_many(one(b"5")) == [None]
        assert publisher.renewed == 2
        bodies = []
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                bodies.append(message.body)
                break
        assert bodies == [b"5"]
    finally:
        await publisher.close()
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
