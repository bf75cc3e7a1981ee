"""A batch whose confirms are outstanding when its connection dies is not assumed sent: the relay
leaves every row of it unsent and publishes it again on the next connection, and the consumer's
inbox makes a copy that did reach the broker harmless (ADR 0013: a broker node killed under a
service is exactly this).

Real: RabbitMQ and PostgreSQL. The connection's socket is aborted, through the aiormq transport
factory the bus itself uses for a cluster, the moment the batch's frames are on the wire and
before any confirm can have been read.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, cast

import aio_pika
import aiormq
import pytest
from aiormq.connection import TCPTransportFactory
from yarl import URL

from eventshop.chaos.proxy import FaultProxy, upstream_of, via_proxy
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus import publisher as publisher_module
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.relay import OutboxRelay
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.settings import PlatformSettings
from tests.integration.helpers import (
    PINGED,
    Bus,
    commit_pings,
    effects_of,
    fetchval,
    ping,
    record_effect,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


class SocketKeeper(TCPTransportFactory):
    """aiormq's TCP socket, kept so the test can cut it."""

    writer: asyncio.StreamWriter | None = None

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
        reader, writer = await super().create(url, **kwargs)
        self.writer = writer
        return reader, writer


async def test_a_batch_unconfirmed_when_the_connection_dies_stays_unsent_and_is_sent_again(
    bus: Bus, settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, consumer_pool = await bus.node({PINGED: record_effect})
    producer, pool = await bus.node(start=False)
    envelopes = await commit_pings(pool, producer.service, [Pinged(seq=i) for i in range(50)])

    socket = SocketKeeper()
    doomed = aio_pika.Connection(URL(settings.amqp_url))
    doomed.kwargs["transport_factory"] = socket
    await doomed.connect()
    publisher = Publisher(doomed, settings.exchange, confirm_timeout_s=5.0)
    await publisher.start()
    relay = OutboxRelay(
        pool, publisher, dsn=settings.database_url, schema=producer.schema, app_id=producer.service
    )
    send_batch = publisher_module._send_batch

    async def send_then_lose_the_connection(*args: Any) -> Any:
        batch = await send_batch(*args)  # every frame handed to the socket
        assert socket.writer is not None
        socket.writer.transport.abort()  # no confirm can have been read yet
        return batch

    monkeypatch.setattr(publisher_module, "_send_batch", send_then_lose_the_connection)
    assert await relay.relay_once() == 0
    unsent = "SELECT count(*) FROM outbox WHERE last_error IS NOT NULL"
    assert await fetchval(pool, unsent) == len(envelopes)

    # the next connection: the same rows are published again, each handled exactly once
    monkeypatch.setattr(publisher_module, "_send_batch", send_batch)
    await pool.execute("UPDATE outbox SET next_attempt_at = NULL")
    fresh = await aio_pika.connect(settings.amqp_url)
    try:
        again = Publisher(fresh, settings.exchange, confirm_timeout_s=5.0)
        await again.start()
        relay = OutboxRelay(
            pool, again, dsn=settings.database_url, schema=producer.schema,
            app_id=producer.service,
        )  # fmt: skip
        assert await relay.relay_once() == len(envelopes)
        for env in envelopes:
            await eventually(partial(effects_of, consumer_pool, env.event_id), 1)
        assert await fetchval(pool, "SELECT count(*) FROM outbox") == 0
    finally:
        await fresh.close()
        await doomed.close()


async def test_confirms_that_never_come_time_out_each_message_and_leave_nothing_behind(
    bus: Bus, settings: PlatformSettings
) -> None:
    """The link goes silent as the batch is written: every message of it times out (not "the
    channel closed": it did not), and the channel keeps none of their ids afterwards."""
    await bus.node({PINGED: record_effect})  # the exchange, and a queue bound to the pings
    proxy = await FaultProxy(upstream_of(settings.amqp_url, 5672)).start()
    connection = await aio_pika.connect(via_proxy(settings.amqp_url, proxy.port))
    try:
        publisher = Publisher(connection, settings.exchange, confirm_timeout_s=1.0)
        await publisher.start()
        envelopes = [ping(i) for i in range(30)]
        messages = [(PINGED, message_from_envelope(e)) for e in envelopes]

        proxy.black_hole()  # what is written now stays in the proxy
        started = asyncio.get_running_loop().time()
        results = await publisher.publish_many(messages)
        assert asyncio.get_running_loop().time() - started < 5.0
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert publisher._channel is not None
        channel = cast(aiormq.Channel, await publisher._channel.get_underlay_channel())
        ids = {str(e.event_id) for e in envelopes}
        assert not ids & set(channel.message_id_delivery_tag)
        assert all(f.done() for f in channel.confirmations.values())
    finally:
        proxy.heal()
        await connection.close()
        await proxy.close()
