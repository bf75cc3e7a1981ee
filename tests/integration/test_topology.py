"""The broker topology against the real RabbitMQ: declared idempotently from code, a mismatch
with what exists is an error naming the difference, and an unroutable publish is an error."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from eventshop.contracts import new_envelope
from eventshop.platform.bus.publisher import PublishError
from eventshop.platform.bus.topology import (
    ServiceQueues,
    TopologyMismatchError,
    declare_exchange,
    declare_service_queues,
)
from eventshop.platform.bus.wire import message_from_envelope
from tests.integration.helpers import PINGED, Bus, ping
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def service_queues(bus: Bus, *keys: str) -> ServiceQueues:
    queues = ServiceQueues(Bus.service_name("topo"), keys or (PINGED,), (100, 200))
    bus.delete_at_end(queues)
    return queues


async def depth(bus: Bus, name: str) -> int:
    return (await bus.queue_depth(name))[0]


# -- 6. mismatches --------------------------------------------------------------------------------


async def test_an_existing_classic_queue_is_a_mismatch_naming_the_argument_and_both_values(
    bus: Bus,
) -> None:
    queues = service_queues(bus)
    connection = await bus.connection()
    channel = await connection.channel()
    await channel.declare_queue(queues.main, durable=True, arguments={"x-queue-type": "classic"})

    with pytest.raises(TopologyMismatchError) as caught:
        await declare_service_queues(connection, bus.settings.exchange, queues)
    message = str(caught.value)
    assert "x-queue-type" in message
    assert "classic" in message and "quorum" in message
    assert queues.main in message
    assert message.index("classic") < message.index("quorum")  # what exists, then the code's
    # the connection survives the refused declaration
    assert not connection.is_closed
    assert await depth(bus, queues.main) == 0


async def test_the_mismatch_message_quotes_values_as_the_broker_gives_them(bus: Bus) -> None:
    queues = service_queues(bus)
    connection = await bus.connection()
    channel = await connection.channel()
    await channel.declare_queue(queues.main, durable=True, arguments={"x-queue-type": "classic"})
    with pytest.raises(TopologyMismatchError) as caught:
        await declare_service_queues(connection, bus.settings.exchange, queues)
    assert "x-queue-type = 'classic', but the code declares x-queue-type = 'quorum'" in str(
        caught.value
    )


async def test_a_retry_queue_with_another_ttl_is_a_mismatch(bus: Bus) -> None:
    queues = service_queues(bus)
    connection = await bus.connection()
    channel = await connection.channel()
    args = {**queues.retry_arguments(100), "x-message-ttl": 999}
    await channel.declare_queue(queues.retry(1), durable=True, arguments=args)

    with pytest.raises(TopologyMismatchError) as caught:
        await declare_service_queues(connection, bus.settings.exchange, queues)
    message = str(caught.value)
    assert "x-message-ttl" in message and "999" in message and "100" in message
    assert queues.retry(1) in message


async def test_an_exchange_of_another_type_is_a_mismatch(bus: Bus) -> None:
    name = f"topo_ex_{uuid.uuid4().hex[:8]}"
    channel = await (await bus.connection()).channel()
    await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    try:
        other = await (await bus.connection()).channel()
        with pytest.raises(TopologyMismatchError) as caught:
            await declare_exchange(other, name)
        message = str(caught.value)
        assert name in message and "fanout" in message and "topic" in message
    finally:
        await channel.exchange_delete(name)


# -- 6. idempotent declaration, and what it declares works ----------------------------------------


async def test_declaring_twice_with_the_same_arguments_is_fine_and_the_topology_works(
    bus: Bus,
) -> None:
    queues = service_queues(bus, PINGED, "selfcheck.ponged")
    connection = await bus.connection()
    await declare_service_queues(connection, bus.settings.exchange, queues)
    await declare_service_queues(connection, bus.settings.exchange, queues)

    for name in (queues.main, queues.parked, queues.retry(1), queues.retry(2)):
        assert await depth(bus, name) == 0
    # equivalence is the broker's to judge: re-declaring each queue as declared is accepted
    channel = await connection.channel()
    await channel.declare_queue(queues.main, durable=True, arguments=queues.main_arguments())
    await channel.declare_queue(queues.parked, durable=True, arguments=queues.parked_arguments())
    for i, delay in enumerate(queues.retry_delays_ms, start=1):
        await channel.declare_queue(
            queues.retry(i), durable=True, arguments=queues.retry_arguments(delay)
        )

    # each routing key is bound to the service queue
    publisher = await bus.publisher()
    await publisher.publish(PINGED, message_from_envelope(ping(1)))
    pong = new_envelope("selfcheck.ponged", 1, "agg", {"seq": 1})
    await publisher.publish("selfcheck.ponged", message_from_envelope(pong))
    await eventually(lambda: depth(bus, queues.main), 2)

    # a delay queue dead-letters back into the service queue once its TTL runs out
    await publisher.publish(queues.retry(1), message_from_envelope(ping(2)), to_queue=True)
    await eventually(lambda: depth(bus, queues.main), 3)
    assert await depth(bus, queues.retry(1)) == 0


# -- 6. unroutable --------------------------------------------------------------------------------


async def test_publishing_an_event_no_queue_is_bound_to_raises_publish_error(bus: Bus) -> None:
    publisher = await bus.publisher()
    nobody = f"nobody.listens_{uuid.uuid4().hex[:8]}"
    env = new_envelope(nobody, 1, "agg", {})
    with pytest.raises(PublishError, match=nobody):
        await publisher.publish(nobody, message_from_envelope(env))
    # ... and to a queue that does not exist
    with pytest.raises(PublishError):
        await publisher.publish(
            f"no_such_queue_{uuid.uuid4().hex[:8]}", message_from_envelope(env), to_queue=True
        )

    # a batch gets one result per message: the routable one is confirmed, the other is not
    queues = service_queues(bus)
    await declare_service_queues(await bus.connection(), bus.settings.exchange, queues)
    results = await publisher.publish_many(
        [(nobody, message_from_envelope(env)), (PINGED, message_from_envelope(ping(1)))]
    )
    assert results[1] is None
    assert isinstance(results[0], Exception)
    # the channel is still usable after a returned message
    await publisher.publish(PINGED, message_from_envelope(ping(2)))
    await eventually(lambda: depth(bus, queues.main), 2)
