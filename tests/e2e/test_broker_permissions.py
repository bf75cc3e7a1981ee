"""Each service connects as its own RabbitMQ user and may publish only its own event types."""

from __future__ import annotations

import aio_pika
import aiormq
import pytest

from eventshop.contracts import new_envelope
from eventshop.contracts.loyalty import PointsAwarded
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.tooling import broker, supervise

pytestmark = pytest.mark.e2e


def _event(event_type: str) -> aio_pika.Message:
    return message_from_envelope(new_envelope(event_type, 1, "permission-test", {}))


async def test_a_service_may_publish_its_own_events_and_no_others(
    platform: supervise.Layout,
) -> None:
    conn = await aio_pika.connect(broker.amqp_url("loyalty"))
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(broker.EXCHANGE, ensure=False)
        # its own event type is accepted (a valid one: the archive keeps every event)
        own = PointsAwarded(user_id="permission-test", order_id="none", points=0, balance=0)
        message = message_from_envelope(
            new_envelope(own.event_type, 1, "permission-test", own.model_dump(mode="json"))
        )
        message.user_id = "loyalty"  # as the platform stamps it (the broker checks it)
        await exchange.publish(message, routing_key=own.event_type)
        # another service's event type: the broker closes the channel
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await exchange.publish(_event("order.confirmed"), routing_key="order.confirmed")
    finally:
        await conn.close()


async def test_a_service_cannot_read_another_services_queue(platform: supervise.Layout) -> None:
    conn = await aio_pika.connect(broker.amqp_url("loyalty"))
    try:
        channel = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_queue("payments", passive=True)
            queue = await channel.get_queue("payments", ensure=False)
            await queue.get(fail=False)
    finally:
        await conn.close()
