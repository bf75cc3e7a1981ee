"""The AMQP frames every event crosses, coded without pamqp's generic walk, and the deliveries
handed over without a task each (ADR 0018).

Every event the bus carries is a Basic.Publish, a content header and a body on its way up, a
Basic.Deliver, a content header and a body on its way down, and a Basic.Ack each way. pamqp
codes each of them by walking the frame's attributes and looking each one's type up by name:
11 µs to read a Basic.Deliver, 30 to read a content header with the bus's properties, 29 to
write one and 10 to write a Basic.Publish. These functions code those frames with a few
precompiled structs instead (4, 14, 17 and 5 µs), into and from pamqp's own objects, and hand
every other frame (the connection's and channel's methods, heartbeats, returns, a content
header that is not Basic's) to pamqp as before.

They are pamqp's `frame.marshal` and `frame.unmarshal` for aiormq, which calls both through the
module (`pamqp.frame.unmarshal(...)`): `install()` puts them there, once per process, and
keeps pamqp's own as the fallback. Where a frame is anything but what the broker and the bus
send (a value of another type, a string too long, a length that does not add up), the frame is
coded by pamqp's own function, so its result and its errors are pamqp's: the property tests
(tests/unit/bus/test_codec.py) check both ways against pamqp's functions, byte for byte and
attribute for attribute, on generated frames and on broken ones.

`install()` also makes `FrameReader` (one read for as many frames as have arrived, instead of
three a frame) the reader of aiormq's connections, and `DeliveringChannel` their channel: a
consumer made by `direct_consumer` gets each delivery as the connection reads it (or, when the
channel's queue holds frames before it, in the channel's reader), never in a task of aiormq's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import struct
from collections.abc import Callable, Iterator
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.abc import ConfirmationFrameType, ConsumerCallback, DeliveredMessage
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import encode
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.decode import TABLE_MAPPING
from pamqp.exceptions import PAMQPException
from pamqp.frame import FrameTypes
from pamqp.header import ContentHeader

from eventshop.platform.observability.logging import get_logger

_log = get_logger(__name__)

#: pamqp's own, which code every frame these do not
_pamqp_marshal = pamqp.frame.marshal
_pamqp_unmarshal = pamqp.frame.unmarshal

_FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
_FRAME_END = 0xCE
_FRAME_END_BYTE = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_CONTENT_HEADER = struct.Struct(">HHQH")  # class, weight, body size, first flag word
_CONTENT_HEADER_OUT = struct.Struct(">HxxQH")  # class, (weight 0), body size, flags
_BASIC = Basic.frame_id  # 60

_DELIVER = Basic.Deliver.index
_ACK = Basic.Ack.index
_PUBLISH_HEAD = struct.Struct(">IH")  # method index, ticket
_ACK_OUT = struct.Struct(">IqB")  # method index, delivery tag, bits

_SHORTSTR, _OCTET, _TIMESTAMP, _TABLE = range(4)
_KINDS = {"shortstr": _SHORTSTR, "octet": _OCTET, "timestamp": _TIMESTAMP, "table": _TABLE}
#: Basic's properties in their order on the wire: (flag bit, attribute, kind)
_PROPERTIES: tuple[tuple[int, str, int], ...] = tuple(
    (Basic.Properties.flags[name], name, _KINDS[Basic.Properties.amqp_type(name)])
    for name in Basic.Properties.__slots__
)

_UTC = datetime.UTC
_from_timestamp = datetime.datetime.fromtimestamp


class _NotOurs(Exception):
    """A frame these functions leave to pamqp."""


# -- reading ----------------------------------------------------------------------------------
def unmarshal(data_in: bytes) -> tuple[int, int, FrameTypes]:
    """`pamqp.frame.unmarshal`: bytes consumed, channel, frame."""
    if len(data_in) > 7:
        kind, channel, size = _FRAME_HEAD.unpack_from(data_in)
        end = 7 + size
        if size and len(data_in) > end and data_in[end] == _FRAME_END:
            try:
                if kind == _BODY:
                    return end + 1, channel, ContentBody(data_in[7:end])
                if kind == _HEADER:
                    return end + 1, channel, _content_header(data_in, end)
                if kind == _METHOD:
                    return end + 1, channel, _method(data_in, end)
            except (_NotOurs, ValueError, IndexError, struct.error):
                pass
    return _pamqp_unmarshal(data_in)


def _short_string(data: bytes, at: int) -> tuple[str, int]:
    stop = at + 1 + data[at]
    return data[at + 1 : stop].decode(), stop


def _method(data: bytes, end: int) -> Frame:
    (index,) = _U32.unpack_from(data, 7)
    frame: Frame
    if index == _DELIVER:
        frame = deliver = Basic.Deliver()
        deliver.consumer_tag, at = _short_string(data, 11)
        (deliver.delivery_tag,) = _I64.unpack_from(data, at)
        deliver.redelivered = bool(data[at + 8] & 1)
        deliver.exchange, at = _short_string(data, at + 9)
        deliver.routing_key, at = _short_string(data, at)
    elif index == _ACK:
        frame = ack = Basic.Ack()
        (ack.delivery_tag,) = _I64.unpack_from(data, 11)
        ack.multiple = bool(data[19] & 1)
        at = 20
    else:
        raise _NotOurs
    if at > end:
        raise _NotOurs
    return frame


def _content_header(data: bytes, end: int) -> ContentHeader:
    class_id, weight, body_size, flags = _CONTENT_HEADER.unpack_from(data, 7)
    if class_id != _BASIC or flags & 1:  # another class, or a second flag word
        raise _NotOurs
    layout = _LAYOUTS.get(flags)
    if layout is None:
        layout = _LAYOUTS[flags] = tuple((n, k) for bit, n, k in _PROPERTIES if flags & bit)
    properties = Basic.Properties()
    at = 21
    for name, kind in layout:
        value: Any
        if kind == _SHORTSTR:  # the short string read here: a call for each cost a tenth
            stop = at + 1 + data[at]
            value = data[at + 1 : stop].decode()
            at = stop
        elif kind == _OCTET:
            value = data[at]
            at += 1
        elif kind == _TABLE:
            value, at = _table(data, at, end)
        else:
            (stamp,) = _U64.unpack_from(data, at)
            if stamp > 0xFFFFFFFF:  # pamqp's reading: milliseconds
                raise _NotOurs
            value = _from_timestamp(stamp, tz=_UTC)
            at += 8
        setattr(properties, name, value)
    if at > end:
        raise _NotOurs
    header = ContentHeader(weight, body_size, properties)
    header.class_id = class_id
    return header


#: the properties a flag word says are there, in their order: (attribute, kind), by flag word
_LAYOUTS: dict[int, tuple[tuple[str, int], ...]] = {}


_S, _b, _l, _t = b"S"[0], b"b"[0], b"l"[0], b"t"[0]


def _table(data: bytes, at: int, end: int) -> tuple[dict[str, Any], int]:
    (size,) = _U32.unpack_from(data, at)
    at += 4
    stop = at + size
    if stop > end:
        raise _NotOurs
    table: dict[str, Any] = {}
    while at < stop:
        key, at = _short_string(data, at)
        kind = data[at]
        at += 1
        value: Any
        if kind == _S:
            (length,) = _U32.unpack_from(data, at)
            raw = data[at + 4 : at + 4 + length]
            at += 4 + length
            try:
                value = raw.decode()
            except UnicodeDecodeError:
                value = raw
        elif kind == _b:
            value = data[at] - 256 if data[at] > 127 else data[at]
            at += 1
        elif kind == _l:
            (value,) = _I64.unpack_from(data, at)
            at += 8
        elif kind == _t:
            value = bool(data[at])
            at += 1
        else:  # the rarer types, as pamqp reads them
            decoder = TABLE_MAPPING.get(bytes((kind,)))
            if decoder is None:
                raise _NotOurs
            consumed, value = decoder(data[at:])
            at += consumed
        table[key] = value
    if at != stop:
        raise _NotOurs
    return table, stop


# -- writing ----------------------------------------------------------------------------------
def marshal(frame_value: FrameTypes, channel_id: int) -> bytes:
    """`pamqp.frame.marshal`: the frame's bytes on channel `channel_id`."""
    writer = _WRITERS.get(type(frame_value))
    if writer is not None:
        kind, write = writer
        try:
            payload = write(frame_value)
        except _NotOurs:
            pass
        else:
            return _FRAME_HEAD.pack(kind, channel_id, len(payload)) + payload + _FRAME_END_BYTE
    return _pamqp_marshal(frame_value, channel_id)


def _short_bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise _NotOurs
    raw = value.encode()
    if len(raw) > 255:
        raise _NotOurs
    return bytes((len(raw),)) + raw


def _write_body(frame: ContentBody) -> bytes:
    value = frame.value
    if type(value) is not bytes:
        raise _NotOurs
    return value


def _write_publish(frame: Basic.Publish) -> bytes:
    frame.validate()  # as pamqp does before it writes a method
    ticket = frame.ticket
    if type(ticket) is not int or not 0 <= ticket <= 0xFFFF:
        raise _NotOurs
    if type(frame.mandatory) is not bool or type(frame.immediate) is not bool:
        raise _NotOurs
    bits = frame.mandatory | frame.immediate << 1
    return b"".join(
        (
            _PUBLISH_HEAD.pack(Basic.Publish.index, ticket),
            _short_bytes(frame.exchange),
            _short_bytes(frame.routing_key),
            bytes((bits,)),
        )
    )


def _write_ack(frame: Basic.Ack) -> bytes:
    frame.validate()
    tag = frame.delivery_tag
    if type(tag) is not int or not 0 <= tag < 1 << 63 or type(frame.multiple) is not bool:
        raise _NotOurs
    return _ACK_OUT.pack(Basic.Ack.index, tag, frame.multiple)


def _write_table(table: Any) -> bytes:
    if type(table) is not dict or not table:
        raise _NotOurs
    parts = []
    for key, value in sorted(table.items()):
        parts.append(_short_bytes(key))
        if len(parts[-1]) > 129:  # pamqp cuts a name past 128 bytes
            raise _NotOurs
        kind = type(value)
        if kind is str:
            raw = value.encode()
            parts.append(b"S" + _U32.pack(len(raw)) + raw)
        elif kind is int:
            parts.append(encode.table_integer(value))
        elif kind is bool:
            parts.append(b"t\x01" if value else b"t\x00")
        else:
            raise _NotOurs
    payload = b"".join(parts)
    return _U32.pack(len(payload)) + payload


def _write_header(frame: ContentHeader) -> bytes:
    properties = frame.properties
    if type(properties) is not Basic.Properties:
        raise _NotOurs
    body_size = frame.body_size
    if type(body_size) is not int or not 0 <= body_size < 1 << 64:
        raise _NotOurs
    flags = 0
    parts = [b""]
    for bit, name, kind in _PROPERTIES:
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= bit
        if kind == _SHORTSTR:
            parts.append(_short_bytes(value))
        elif kind == _OCTET:
            if type(value) is not int or not 0 <= value <= 255:
                raise _NotOurs
            parts.append(bytes((value,)))
        elif kind == _TABLE:
            parts.append(_write_table(value))
        else:
            if type(value) is not datetime.datetime:
                raise _NotOurs
            parts.append(encode.timestamp(value))
    parts[0] = _CONTENT_HEADER_OUT.pack(_BASIC, body_size, flags)
    return b"".join(parts)


#: the frames written here: their frame type and their payload's writer
_WRITERS: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    ContentBody: (_BODY, _write_body),
    ContentHeader: (_HEADER, _write_header),
    Basic.Publish: (_METHOD, _write_publish),
    Basic.Ack: (_METHOD, _write_ack),
}


# -- the connection's reader --------------------------------------------------------------------
class FrameReader(aiormq.connection.FrameReceiver):
    """aiormq's frame reader, cutting frames out of whatever the stream holds (one read for as
    many frames as have arrived) instead of three reads a frame into a BytesIO: in `bench bus`
    the consumer's CPU per event 37.2 -> 33.0 µs (0.89, three rounds; see
    docs/PERFORMANCE.md §5.9), where two reads a frame had been 38 µs a delivery against
    aiormq's 47. What it returns and raises, on a whole stream, a cut one or a changed one, is
    aiormq's (the property tests in tests/unit/bus/test_codec.py read both)."""

    _buffer = b""
    _at = 0

    async def get_frame(self) -> tuple[int, int, FrameTypes]:
        buffer, at = self._buffer, self._at
        if at == len(buffer) and self.reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        while True:
            held = len(buffer) - at
            if held >= 7:
                if not self.started:
                    if buffer.startswith(b"AMQP", at):
                        raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                    self.started = True
                (size,) = _U32.unpack_from(buffer, at + 3)
                end = at + size + 8
                if len(buffer) >= end:
                    self._at = end
                    try:
                        return pamqp.frame.unmarshal(buffer[at:end])
                    except PAMQPException as e:
                        raise InvalidFrameError(str(e)) from e
            chunk = await self._read()
            if not chunk:  # the stream ended inside a frame: as aiormq says it
                expected = 7 if held < 7 else _U32.unpack_from(buffer, at + 3)[0] + 8
                raise AMQPConnectionError(
                    "Server connection unexpectedly closed. "
                    f"Read {held} bytes but {expected} bytes expected"
                )
            buffer = buffer[at:] + chunk if held else chunk
            at = 0
            self._buffer, self._at = buffer, 0

    async def _read(self) -> bytes:
        try:
            async with self.lock:
                return await self.reader.read(_READ_SIZE)
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e


#: what one read takes from the stream at most (what it holds, up to this)
_READ_SIZE = 256 * 1024


# -- the channel's deliveries ------------------------------------------------------------------
#: the attribute of a consumer callback that takes its deliveries in the channel's reader
_TAKE = "eventshop_take"


def direct_consumer(take: Callable[[DeliveredMessage], None]) -> ConsumerCallback:
    """A consumer callback for `basic_consume` whose deliveries `take` receives in the channel's
    own reader, with no task each (on a channel of `DeliveringChannel`; elsewhere, in aiormq's
    task as any callback). `take` must neither block nor raise: it hands the message over."""

    async def consume(message: DeliveredMessage) -> None:
        take(message)

    setattr(consume, _TAKE, take)
    return consume


class _Frames(asyncio.Queue[tuple[int, Any]]):
    """The channel's frame queue, which the connection's reader fills (`put`, one frame at a
    time in the order the broker sent them). A delivery to a `direct_consumer` is taken here
    instead, its three frames (or more, for a body of several) assembled as they come and the
    message handed to the consumer at once: no trip through the queue and the channel's reader
    for each frame, so no wake-up of the channel's task for each.

    Only when nothing could come before it: the queue is empty and the channel's reader is not
    in the middle of a message of its own (a delivery it started, a return, a basic.get). Any
    other frame, and every frame while something waits in the queue, goes through the queue to
    aiormq's reader as before, so the channel sees every frame in the broker's order. A frame
    that breaks a delivery off (a method where its header or body should be) is the broker
    breaking the protocol: `InvalidFrameError`, which ends the connection, as aiormq's reader
    ends the channel on the same frame."""

    def __init__(self, channel: DeliveringChannel, maxsize: int) -> None:
        super().__init__(maxsize)
        self._channel = channel
        self._reset()

    def _reset(self) -> None:
        """No delivery being assembled."""
        self._deliver: Basic.Deliver | None = None
        self._take: Callable[[DeliveredMessage], None] | None = None
        self._header: ContentHeader | None = None
        self._parts: list[bytes] = []
        self._size = 0

    async def put(self, item: tuple[int, Any]) -> None:
        if not self._taken(item[1]):
            await super().put(item)

    def _taken(self, frame: Any) -> bool:
        if self._deliver is None:
            if (
                type(frame) is not Basic.Deliver
                or frame.consumer_tag is None
                or self._channel.reading_content
                or not self.empty()
            ):
                return False
            take = getattr(self._channel.consumers.get(frame.consumer_tag), _TAKE, None)
            if take is None:
                return False
            self._deliver, self._take = frame, take
            return True
        if self._header is None:
            if not isinstance(frame, ContentHeader):
                self._broken(frame, "ContentHeader")
            self._header = frame
        elif isinstance(frame, ContentBody):
            self._parts.append(frame.value)
            self._size += len(frame.value)
        else:
            self._broken(frame, "ContentBody")
        if self._size >= self._header.body_size:
            self._hand_over()
        return True

    def _hand_over(self) -> None:
        deliver, take, header = self._deliver, self._take, self._header
        assert deliver is not None and take is not None and header is not None
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._reset()
        channel = self._channel
        message = DeliveredMessage(delivery=deliver, header=header, body=body, channel=channel)
        try:
            take(message)
        except Exception:  # as aiormq logs a consumer's failure, and goes on
            _log.exception("aiormq.consumer_failed", consumer_tag=deliver.consumer_tag)

    def _broken(self, frame: Any, expected: str) -> None:
        self._reset()
        raise InvalidFrameError(f"unexpected frame {frame!r} instead of {expected}")


class DeliveringChannel(aiormq.Channel):
    """aiormq's channel, handing a delivery to a `direct_consumer` where it reads it instead of
    in a task of its own per delivery (a task, a wrapper and two callbacks); any other consumer
    gets its deliveries as aiormq gives them. Where nothing is queued before it, the delivery is
    taken as the connection reads it, before it reaches the channel's queue (`_Frames`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the channel's reader is inside a message (content frames still to come to it)
        self.reading_content = False
        self.frames = _Frames(self, self.frames.maxsize)

    @contextlib.contextmanager
    def _inside_message(self) -> Iterator[None]:
        self.reading_content = True
        try:
            yield
        finally:
            self.reading_content = False

    async def _on_return_frame(self, frame: Basic.Return) -> None:
        with self._inside_message():
            await super()._on_return_frame(frame)

    async def _on_get_frame(self, frame: Basic.GetOk | Basic.GetEmpty) -> None:
        with self._inside_message():
            await super()._on_get_frame(frame)

    async def _on_deliver_frame(self, frame: Basic.Deliver) -> None:
        with self._inside_message():
            await self._read_delivery(frame)

    async def _on_confirm_frame(self, frame: ConfirmationFrameType) -> None:
        """aiormq's, with a multiple confirm's tags settled in one pass.

        For each multiple confirm aiormq walks every tag still awaiting one and schedules a
        callback for each tag the frame covers: a batch of a thousand publishes confirmed in a
        few dozen frames cost the relay tens of thousands of steps and a thousand callbacks.
        The tags are in `confirmations` in the order they were given (aiormq's `basic_publish`
        and the bus's batches both add them under the channel's lock, each above the last), so
        the covered ones are its first entries: they are taken up to the first tag above the
        frame's and settled at once by aiormq's own `_confirm_delivery`."""
        confirmations = self.confirmations
        tag = frame.delivery_tag
        if not self.publisher_confirms or tag not in confirmations:
            await super()._on_confirm_frame(frame)  # nothing, or aiormq's error line
            return
        if not getattr(frame, "multiple", False):
            self._confirm_delivery(tag, frame)
            return
        covered = []
        for waiting in confirmations:
            if waiting > tag:
                break
            covered.append(waiting)
        for waiting in covered:
            self._confirm_delivery(waiting, frame)

    async def _read_delivery(self, frame: Basic.Deliver) -> None:
        # as aiormq's own: the header, the body, then the consumer its tag names now
        header = await self._get_frame()
        if not isinstance(header, ContentHeader):
            raise ValueError(f"Unexpected frame {header!r} instead of ContentHeader", header)
        message = await self._read_content(frame, header)
        if frame.consumer_tag is None:
            _log.warning("aiormq.frame_without_consumer_tag", frame=repr(frame))
            return
        consumer = self.consumers.get(frame.consumer_tag)
        if consumer is None:
            return
        take = getattr(consumer, _TAKE, None)
        if take is not None:
            try:
                take(message)
            except Exception:  # as aiormq logs a consumer's failure, and goes on
                _log.exception("aiormq.consumer_failed", consumer_tag=frame.consumer_tag)
            return
        task = self.create_task(consumer(message))
        task.add_done_callback(self._on_consumer_done)


_aiormq_channel = aiormq.Channel
_aiormq_frame_receiver = aiormq.connection.FrameReceiver


def install() -> None:
    """Make these pamqp's `frame.marshal` and `frame.unmarshal` in this process (aiormq looks
    them up there at each call), and `FrameReader` and `DeliveringChannel` the reader and the
    channels of aiormq's connections made from now on. Idempotent."""
    pamqp.frame.marshal = marshal
    pamqp.frame.unmarshal = unmarshal
    aiormq.connection.FrameReceiver = FrameReader  # type: ignore[misc]
    aiormq.connection.Channel = DeliveringChannel  # type: ignore[attr-defined,misc]


def uninstall() -> None:
    """pamqp's own again (the benchmark's raw client measures aio-pika as it comes)."""
    pamqp.frame.marshal = _pamqp_marshal
    pamqp.frame.unmarshal = _pamqp_unmarshal
    aiormq.connection.FrameReceiver = _aiormq_frame_receiver  # type: ignore[misc]
    aiormq.connection.Channel = _aiormq_channel  # type: ignore[attr-defined,misc]
