"""The bus's AMQP codec, reader and channel on the real broker (ADR 0018): what aiormq gave,
given the bus's way, and what the bus does not take over still aiormq's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import aiormq
import pamqp.frame
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.common import FieldTable

from eventshop.platform.bus import codec
from eventshop.platform.bus.node import connect_robust
from eventshop.platform.settings import PlatformSettings
from tests.support.polling import eventually


@pytest.fixture
async def channel(settings: PlatformSettings) -> AsyncIterator[aiormq.Channel]:
    connection = await connect_robust(settings.amqp_url, name="test-codec")
    try:
        robust = await connection.channel()
        # the aiormq channel, as the consumer takes it
        yield cast(aiormq.Channel, await robust.get_underlay_channel())
    finally:
        await connection.close()


async def test_a_platform_connection_codes_reads_and_delivers_the_bus_s_way(
    channel: aiormq.Channel,
) -> None:
    assert pamqp.frame.unmarshal is codec.unmarshal and pamqp.frame.marshal is codec.marshal
    assert type(channel) is codec.DeliveringChannel
    assert aiormq.connection.FrameReceiver is codec.FrameReader


async def test_a_direct_consumer_takes_every_delivery_in_the_channel_s_reader_and_others_in_tasks(
    channel: aiormq.Channel,
) -> None:
    direct_q = str((await channel.queue_declare(exclusive=True)).queue)
    other_q = str((await channel.queue_declare(exclusive=True)).queue)
    taken: list[tuple[bytes, asyncio.Task[Any] | None, FieldTable | None]] = []
    others: list[tuple[bytes, asyncio.Task[Any] | None]] = []

    def take(message: DeliveredMessage) -> None:
        taken.append((message.body, asyncio.current_task(), message.header.properties.headers))

    async def other(message: DeliveredMessage) -> None:
        others.append((message.body, asyncio.current_task()))

    await channel.basic_consume(direct_q, codec.direct_consumer(take), no_ack=True)
    await channel.basic_consume(other_q, other, no_ack=True)
    headers: FieldTable = {"schema_version": 2, "causation_id": str(uuid.uuid4()), "x-attempt": 3}
    bodies = [f"m{i}".encode() * 300 for i in range(5)]
    bodies[2] += b"y" * 300_000  # a body of several frames (frame_max is 128 KB)
    for i, body in enumerate(bodies):
        for queue in (direct_q, other_q):
            await channel.basic_publish(
                body,
                routing_key=queue,
                properties=Basic.Properties(headers=headers, message_id=f"id{i}"),
            )

    await eventually(lambda: len(taken) == 5 and len(others) == 5, timeout=10)
    assert [body for body, _, _ in taken] == bodies
    assert all(h == headers for _, _, h in taken)
    # taken where the connection or the channel reads (the channel's queue held a frame of
    # the other consumer's, or did not): a reader's task, still running, none made for one
    assert len({id(task) for _, task, _ in taken}) <= 2
    assert all(task is not None and not task.done() for _, task, _ in taken)
    # another consumer, as aiormq gives it: each delivery in a task of its own
    assert [body for body, _ in others] == bodies
    assert len({id(task) for _, task in others}) == 5
    assert all(task is not None and task.done() for _, task in others)


async def test_deliveries_to_a_direct_consumer_are_taken_as_the_connection_reads_them(
    channel: aiormq.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing else on the channel: every delivery skips its queue and its reader, in order,
    the body of several frames too; the channel still answers its own calls afterwards."""
    assert isinstance(channel, codec.DeliveringChannel)
    through_reader: list[Basic.Deliver] = []
    read_delivery = channel._read_delivery

    async def counted(frame: Basic.Deliver) -> None:
        through_reader.append(frame)
        await read_delivery(frame)

    monkeypatch.setattr(channel, "_read_delivery", counted)
    queue = str((await channel.queue_declare(exclusive=True)).queue)
    taken: list[tuple[bytes, asyncio.Task[Any] | None]] = []

    def take(message: DeliveredMessage) -> None:
        taken.append((message.body, asyncio.current_task()))

    await channel.basic_consume(queue, codec.direct_consumer(take), no_ack=True)
    # published on a channel of their own: their confirms are not frames of the consumer's
    publishing = await channel.connection.channel(publisher_confirms=False)
    bodies = [f"event {i}".encode() * 40 for i in range(200)]
    bodies[77] = b"z" * 300_000  # three frames of body
    bodies[78] = b""  # a header and no body frame
    for body in bodies:
        await publishing.basic_publish(body, routing_key=queue)

    await eventually(lambda: len(taken) == len(bodies), timeout=10)
    assert [body for body, _ in taken] == bodies
    assert through_reader == []
    assert len({id(task) for _, task in taken}) == 1  # the connection's reader
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0
