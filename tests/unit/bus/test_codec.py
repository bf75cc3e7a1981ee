"""The bus's AMQP codec against pamqp's: the same bytes written, the same frames read, the same
errors raised, on generated frames and on broken ones (ADR 0018)."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import re
from typing import Any

import pamqp.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic, Channel
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from eventshop.platform.bus import codec

#: pamqp's own, whatever is installed in this process
PAMQP_MARSHAL = codec._pamqp_marshal
PAMQP_UNMARSHAL = codec._pamqp_unmarshal

short_text = st.text(max_size=40)
#: shortstr fields: mostly valid, sometimes past the 255 bytes a shortstr holds
shortstr = st.one_of(short_text, st.text(min_size=90, max_size=120).map(lambda s: s * 3))
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", max_size=40)
table_values = st.recursive(
    st.one_of(
        st.text(max_size=60),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.booleans(),
        st.floats(allow_nan=False),
        st.none(),
        st.decimals(
            allow_nan=False, allow_infinity=False, places=2, max_value=10**6, min_value=-(10**6)
        ),
        st.datetimes(
            min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2100, 1, 1)
        ).map(lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC)),
        st.binary(max_size=10).map(bytearray),
    ),
    lambda inner: st.one_of(
        st.dictionaries(st.text(max_size=10), inner, max_size=3), st.lists(inner, max_size=3)
    ),
    max_leaves=6,
)
headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=20), table_values, max_size=6),
    # as the bus sends them: a version, ids, a trace, the broker's delivery count
    st.fixed_dictionaries(
        {
            "schema_version": st.integers(min_value=1, max_value=300),
            "causation_id": st.uuids().map(str),
            "traceparent": st.text(max_size=55),
            "x-delivery-count": st.integers(min_value=0, max_value=2**40),
        }
    ),
)
stamps = st.datetimes(
    min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2105, 1, 1)
).map(lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC))


@st.composite
def properties(draw: st.DrawFn) -> Basic.Properties:
    def optional(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.none(), strategy))

    return Basic.Properties(
        content_type=optional(shortstr),
        content_encoding=optional(shortstr),
        headers=draw(headers),
        delivery_mode=optional(st.sampled_from([1, 2])),
        priority=optional(st.integers(min_value=0, max_value=300)),
        correlation_id=optional(shortstr),
        reply_to=optional(short_text),
        expiration=optional(short_text),
        message_id=optional(shortstr),
        timestamp=optional(stamps),
        message_type=optional(short_text),
        user_id=optional(short_text),
        app_id=optional(short_text),
    )


def deliver(
    tag: str, delivery_tag: int, redelivered: bool, exchange: str, key: str
) -> Basic.Deliver:
    frame = Basic.Deliver()
    frame.consumer_tag, frame.delivery_tag, frame.redelivered = tag, delivery_tag, redelivered
    frame.exchange, frame.routing_key = exchange, key
    return frame


delivers = st.builds(
    deliver,
    short_text,
    st.integers(min_value=0, max_value=2**63 - 1),
    st.booleans(),
    names,
    short_text,
)
acks = st.builds(Basic.Ack, st.integers(min_value=0, max_value=2**63 - 1), st.booleans())
publishes = st.builds(
    Basic.Publish,
    st.just(0),
    names,
    short_text,
    st.booleans(),
    st.booleans(),
)
bodies = st.binary(max_size=300).map(ContentBody)
headers_frames = st.builds(
    ContentHeader, st.just(0), st.integers(min_value=0, max_value=2**64 - 1), properties()
)
frames = st.one_of(delivers, acks, publishes, bodies, headers_frames)
channels = st.integers(min_value=0, max_value=2047)


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except Exception as exc:  # the same error, whoever raised it
        return "error", (type(exc), re.sub(r" at 0x[0-9a-f]+", "", str(exc)))


def described(result: tuple[str, Any]) -> Any:
    """A read frame as comparable values (pamqp's frames compare by identity)."""
    kind, value = result
    if kind == "error":
        return result
    consumed, channel, frame = value
    attrs: tuple[Any, ...]
    if isinstance(frame, ContentHeader):
        attrs = (frame.class_id, frame.weight, frame.body_size, _props(frame.properties))
    elif isinstance(frame, ContentBody):
        attrs = (frame.value,)
    elif hasattr(frame, "__slots__") and frame.__slots__:
        attrs = tuple((k, getattr(frame, k)) for k in frame.__slots__)
    else:
        attrs = ()
    return consumed, channel, type(frame), attrs


def _props(p: Basic.Properties) -> tuple[tuple[str, Any], ...]:
    return tuple((k, getattr(p, k)) for k in p.__slots__)


@given(frames, channels)
def test_writes_every_frame_as_pamqp_does(frame: Any, channel: int) -> None:
    assert outcome(codec.marshal, frame, channel) == outcome(PAMQP_MARSHAL, frame, channel)


@given(frames, channels)
def test_reads_every_frame_as_pamqp_does(frame: Any, channel: int) -> None:
    kind, data = outcome(PAMQP_MARSHAL, frame, channel)
    if kind == "ok":
        ours = described(outcome(codec.unmarshal, data))
        assert ours == described(outcome(PAMQP_UNMARSHAL, data))
        assert ours[0] in ("error", len(data))  # read whole (pamqp reads no empty body)


@given(frames, channels, st.data())
def test_reads_a_broken_frame_as_pamqp_does(frame: Any, channel: int, data: st.DataObject) -> None:
    kind, raw = outcome(PAMQP_MARSHAL, frame, channel)
    if kind != "ok":
        return
    broken = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "cut", "append", "set"]))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if how == "flip":
        broken[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    elif how == "set":
        broken[at] = data.draw(st.integers(min_value=0, max_value=255))
    elif how == "cut":
        del broken[at:]
    else:
        broken += data.draw(st.binary(min_size=1, max_size=20))
    assert described(outcome(codec.unmarshal, bytes(broken))) == described(
        outcome(PAMQP_UNMARSHAL, bytes(broken))
    )


@given(st.binary(max_size=64))
def test_reads_noise_as_pamqp_does(noise: bytes) -> None:
    assert described(outcome(codec.unmarshal, noise)) == described(outcome(PAMQP_UNMARSHAL, noise))


def test_leaves_other_frames_to_pamqp() -> None:
    for frame in (Channel.Open(), Heartbeat(), Basic.Qos(prefetch_count=10), Basic.Cancel("c")):
        raw = codec.marshal(frame, 1)
        assert raw == PAMQP_MARSHAL(frame, 1)
        assert described(("ok", codec.unmarshal(raw))) == described(("ok", PAMQP_UNMARSHAL(raw)))


def test_a_header_the_bus_sends_is_read_by_the_fast_path() -> None:
    """Not through pamqp: these frames are the reason the codec exists."""
    props = Basic.Properties(
        content_type="application/json",
        headers={
            "schema_version": 1,
            "causation_id": "c",
            "traceparent": "t",
            "x-delivery-count": 0,
        },
        delivery_mode=2,
        priority=0,
        correlation_id="k",
        message_id="m",
        timestamp=datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC),
        message_type="order.placed",
        user_id="eventshop-orders",
        app_id="orders",
    )
    raw = PAMQP_MARSHAL(ContentHeader(0, 10, props), 1)
    assert codec._content_header(raw, len(raw) - 1).properties == props
    assert codec._write_header(ContentHeader(0, 10, props)) == raw[7:-1]


def test_install_makes_it_pamqps_and_uninstall_takes_it_back() -> None:
    installed = pamqp.frame.unmarshal is codec.unmarshal
    try:
        codec.install()
        assert (pamqp.frame.marshal, pamqp.frame.unmarshal) == (codec.marshal, codec.unmarshal)
        codec.uninstall()
        assert (pamqp.frame.marshal, pamqp.frame.unmarshal) == (PAMQP_MARSHAL, PAMQP_UNMARSHAL)
    finally:
        if installed:
            codec.install()


@pytest.mark.parametrize("value", [decimal.Decimal("1.5"), 1.5, None, [1, "a"], {"a": {"b": 1}}])
def test_a_header_value_of_another_type_is_written_by_pamqp(value: Any) -> None:
    frame = ContentHeader(0, 1, Basic.Properties(headers={"k": value}))
    assert codec.marshal(frame, 1) == PAMQP_MARSHAL(frame, 1)


async def _read_all(receiver_class: type, stream: bytes) -> list[Any]:
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    return await _drain(receiver_class(reader))


async def _drain(receiver: Any) -> list[Any]:
    read: list[Any] = []
    try:
        async for frame in receiver:
            read.append(described(("ok", frame)))
    except Exception as exc:  # what each raises, compared (but how many bytes each had read)
        read.append((type(exc), re.sub(r" at 0x[0-9a-f]+|\d+ bytes", "", str(exc))))
    return read


AIORMQ_RECEIVER = codec._aiormq_frame_receiver


@given(st.lists(st.tuples(frames, channels), max_size=6), st.data())
async def test_the_connection_reads_a_stream_as_aiormq_does(
    sent: list[tuple[Any, int]], data: st.DataObject
) -> None:
    """Whole frames, then the stream cut anywhere, or a byte changed: the same frames and the
    same error as aiormq's own reader (with pamqp's own codec under it)."""
    stream = b"".join(
        raw for kind, raw in (outcome(PAMQP_MARSHAL, f, c) for f, c in sent) if kind == "ok"
    )
    how = data.draw(st.sampled_from(["whole", "cut", "set", "protocol header"]))
    broken = bytearray(stream)
    if how == "cut" and stream:
        del broken[data.draw(st.integers(min_value=0, max_value=len(stream) - 1)) :]
    elif how == "set" and stream:
        at = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
        broken[at] = data.draw(st.integers(min_value=0, max_value=255))
    elif how == "protocol header":
        broken[:0] = b"AMQP\x00\x00\x09\x01"
    ours = await _read_all(codec.FrameReader, bytes(broken))
    codec.uninstall()
    try:
        theirs = await _read_all(AIORMQ_RECEIVER, bytes(broken))
    finally:
        codec.install()
    assert ours == theirs


@given(st.lists(st.tuples(frames, channels), min_size=1, max_size=6), st.data())
async def test_the_connection_reads_frames_that_arrive_in_pieces(
    sent: list[tuple[Any, int]], data: st.DataObject
) -> None:
    """A stream that comes a few bytes at a time, cut anywhere: the same frames as all at once."""
    whole = [raw for kind, raw in (outcome(PAMQP_MARSHAL, f, c) for f, c in sent) if kind == "ok"]
    stream = b"".join(whole)
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(stream) - 1)))))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    async def read(arriving: list[bytes]) -> list[Any]:
        reader = asyncio.StreamReader()
        receiver = codec.FrameReader(reader)

        async def feed() -> None:
            for piece in arriving:
                reader.feed_data(piece)
                await asyncio.sleep(0)

        feeding = asyncio.create_task(feed())
        read: list[Any] = []
        for _ in whole:  # as many frames as were sent; the stream stays open
            result = described(await outcome_of(receiver.get_frame()))
            read.append(result)
            if result[0] == "error":
                break
        await feeding
        return read

    assert await read(pieces) == await read([stream])


async def outcome_of(call: Any) -> tuple[str, Any]:
    try:
        return "ok", await call
    except Exception as exc:
        return "error", (type(exc), str(exc))
