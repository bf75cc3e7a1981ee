"""The channel's frame queue that takes a direct consumer's deliveries as the connection reads
them (codec._Frames, ADR 0018): what it takes, what it leaves to aiormq's reader, in what
order, and what it does with a delivery the broker breaks off. Real pamqp frames; the channel
is a stand-in with the two things the queue reads of it (its consumers, and whether its reader
is inside a message)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import InvalidFrameError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from eventshop.platform.bus import codec


@dataclass
class StandIn:
    consumers: dict[str, Any] = field(default_factory=dict)
    reading_content: bool = False


def frames_of(tag: str, delivery_tag: int, body: bytes, *, frame_size: int = 0) -> list[Any]:
    size = frame_size or max(len(body), 1)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    properties = Basic.Properties(message_id=f"m{delivery_tag}")
    return [
        Basic.Deliver(consumer_tag=tag, delivery_tag=delivery_tag, routing_key="q"),
        ContentHeader(body_size=len(body), properties=properties),
        *[ContentBody(p) for p in parts],
    ]


@pytest.fixture
def taken() -> list[DeliveredMessage]:
    return []


@pytest.fixture
def queue(taken: list[DeliveredMessage]) -> codec._Frames:
    channel = StandIn()
    channel.consumers["direct"] = codec.direct_consumer(taken.append)

    async def other(message: DeliveredMessage) -> None:  # aiormq's kind of consumer
        raise AssertionError("never called here")

    channel.consumers["other"] = other
    return codec._Frames(cast(codec.DeliveringChannel, channel), 0)


async def put_all(queue: codec._Frames, frames: list[Any]) -> None:
    for frame in frames:
        await queue.put((0, frame))


def queued(queue: codec._Frames) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait()[1])
    return out


async def test_a_direct_consumer_s_deliveries_are_taken_whole_and_in_order_and_never_queued(
    queue: codec._Frames, taken: list[DeliveredMessage]
) -> None:
    bodies = [b"first", b"", b"x" * 1000, b"last"]
    for i, body in enumerate(bodies, start=1):
        await put_all(queue, frames_of("direct", i, body, frame_size=300))

    assert queue.empty()
    assert [m.body for m in taken] == bodies  # the empty one and the one of four frames too
    assert [cast(Basic.Deliver, m.delivery).delivery_tag for m in taken] == [1, 2, 3, 4]
    assert [m.header.properties.message_id for m in taken] == ["m1", "m2", "m3", "m4"]
    assert all(m.channel is queue._channel for m in taken)


async def test_another_consumer_s_deliveries_and_other_frames_go_through_the_queue(
    queue: codec._Frames, taken: list[DeliveredMessage]
) -> None:
    other = frames_of("other", 1, b"for aiormq")
    unknown = frames_of("gone", 2, b"no consumer by that tag")
    confirm = Basic.Ack(delivery_tag=7)
    await put_all(queue, [*other, confirm, *unknown])

    assert taken == []
    assert queued(queue) == [*other, confirm, *unknown]


async def test_nothing_overtakes_what_is_queued_or_a_message_the_channel_s_reader_is_inside(
    queue: codec._Frames, taken: list[DeliveredMessage]
) -> None:
    first = frames_of("other", 1, b"queued first")
    behind = frames_of("direct", 2, b"behind it")
    await put_all(queue, [*first, *behind])
    assert taken == []  # the queue held a frame: the direct delivery follows it through
    assert queued(queue) == [*first, *behind]

    queue._channel.reading_content = True  # the reader took a message and waits for its body
    awaited = ContentBody(b"the body it waits for")
    await queue.put((0, awaited))
    inside = frames_of("direct", 3, b"after it")
    await put_all(queue, inside)
    assert taken == []
    assert queued(queue) == [awaited, *inside]

    queue._channel.reading_content = False
    await put_all(queue, frames_of("direct", 4, b"alone again"))
    assert [m.body for m in taken] == [b"alone again"]


@pytest.mark.parametrize("where", ["header", "body"])
async def test_a_delivery_broken_off_by_another_frame_is_a_protocol_error_and_forgotten(
    queue: codec._Frames, taken: list[DeliveredMessage], where: str
) -> None:
    deliver, header, _ = frames_of("direct", 1, b"cut short")
    await queue.put((0, deliver))
    if where == "body":
        await queue.put((0, header))
    with pytest.raises(InvalidFrameError):
        await queue.put((0, Basic.Deliver(consumer_tag="direct", delivery_tag=2)))

    assert taken == [] and queue.empty()
    await put_all(queue, frames_of("direct", 3, b"the next one whole"))
    assert [m.body for m in taken] == [b"the next one whole"]


async def test_a_consumer_that_raises_is_logged_and_the_next_delivery_still_taken(
    queue: codec._Frames, taken: list[DeliveredMessage]
) -> None:
    def refuse(message: DeliveredMessage) -> None:
        raise RuntimeError("a bug in the consumer")

    queue._channel.consumers["refusing"] = codec.direct_consumer(refuse)
    await put_all(queue, frames_of("refusing", 1, b"dropped by its consumer"))
    await put_all(queue, frames_of("direct", 2, b"taken"))

    assert queue.empty()
    assert [m.body for m in taken] == [b"taken"]
