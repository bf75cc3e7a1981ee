"""Publishing with confirms: persistent, mandatory, pipelined.

`publish_many` sends a whole batch before waiting for any confirm, then waits for all of them
(bounded by a timeout): a confirm awaited one at a time caps any client near 2,300 messages/s
here. Each message gets its own result, so the relay takes exactly the confirmed rows out of the
outbox. An unroutable message (mandatory, returned by the broker) and a nack are failures.

A batch goes to the socket as ONE write: its frames are marshalled together and handed to the
connection's writer at once, on the underlying aiormq channel, each message registered for its
confirm (and its possible return) exactly as `aiormq.Channel.basic_publish` registers one.
Publishing through `Exchange.publish` one message at a time costs a write (a syscall, and a
small read for the broker) and about 100 us of client CPU per message; this path about a
fifth of that, and the broker reads the batch in a few large reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from struct import Struct
from typing import Any, cast

import aio_pika
import aiormq
import pamqp.frame
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError, DeliveryError
from pamqp.commands import Basic
from pamqp.constants import FRAME_BODY, FRAME_END, FRAME_HEADER
from pamqp.header import ContentHeader

from eventshop.platform.bus.topology import declare_direct_exchange, declare_exchange
from eventshop.platform.bus.wire import Encoded
from eventshop.platform.observability.logging import get_logger

_log = get_logger(__name__)

#: a message in wire form: routing key, body, AMQP properties (or their header already written)
Prepared = tuple[str, bytes, Basic.Properties | Encoded]


class PublishError(RuntimeError):
    """A message the broker did not confirm: returned, nacked, timed out or connection lost."""


class Publisher:
    """Publishes to the events exchange (routing key: the event type) or, `to_queue=True`, to a
    direct exchange whose bindings name queues: `direct`, the service's own (`<service>.direct`:
    its retry ladder and parking lot), or the one given per call (`via=`, the archive's replays).
    Without `direct` it is the default exchange, which no service user may write to: only tools
    on a vhost of their own (tests, benchmarks) publish that way.

    Every message is stamped with the connection's user as its `user_id`: RabbitMQ refuses a
    message whose user_id is not the connection's user, so a consumer knows for sure who
    published what it receives. `impersonate=True` keeps the user_id each message has (the
    operator's replay of a parked message, as the service that parked it: its user needs the
    broker's `impersonator` tag).
    """

    def __init__(
        self,
        connection: AbstractConnection,
        exchange: str,
        *,
        confirm_timeout_s: float = 10.0,
        direct: str | None = None,
        impersonate: bool = False,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._direct_name = direct or ""
        self._timeout = confirm_timeout_s
        self.user_id: str | None = None if impersonate else user_of(connection)
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._renewing = asyncio.Lock()
        #: channels replaced after a nack (`_renew`): what the bus's tests and logs look at
        self.renewed = 0

    async def start(self) -> None:
        self._channel, self._exchange = await self._open()

    async def _open(self) -> tuple[AbstractChannel, AbstractExchange]:
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await declare_exchange(channel, self._exchange_name)
        if self._direct_name:
            await declare_direct_exchange(channel, self._direct_name)
        return channel, exchange

    async def _renew(self, nacked: AbstractChannel) -> None:
        """A new channel in place of one the broker nacked a message on (ADR 0023).

        RabbitMQ 3.10 checks a quorum queue's leader at a channel's first publish to it, and if
        that node is down at that moment (a connection moved to another node of the cluster
        before the queue had a new leader) the channel nacks every later publish to the queue
        for as long as that node stays down; a new channel asks again. A nack is otherwise rare
        (a classic queue whose node is down), so the cost, a channel opened per nacked batch,
        falls only where publishing already failed. Batches in flight on the old channel when
        it closes fail and are sent again (at least once, as any unconfirmed publish)."""
        async with self._renewing:
            if self._channel is not nacked:
                return  # another batch's nack renewed it already
            try:
                self._channel, self._exchange = await self._open()
            except Exception as exc:  # the connection is down: robust reconnection takes over
                _log.warning("publisher.renew_failed", error=repr(exc))
                return
            self.renewed += 1
            _log.info("publisher.channel_renewed", after="nack", renewed=self.renewed)
            with contextlib.suppress(Exception):
                await nacked.close()

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def publish_many(
        self,
        messages: Sequence[tuple[str, aio_pika.Message]],
        *,
        to_queue: bool = False,
        via: str | None = None,
    ) -> list[BaseException | None]:
        """Publish (routing_key, message) pairs; one result per message, None when confirmed.

        `to_queue=True` sends through the direct exchange, the routing key naming a queue
        (the retry ladder, the parking lot); `via` names another direct exchange (replays).
        """
        return await self.publish_prepared(
            [(key, msg.body, msg.properties) for key, msg in messages], to_queue=to_queue, via=via
        )

    async def publish_prepared(
        self, messages: Sequence[Prepared], *, to_queue: bool = False, via: str | None = None
    ) -> list[BaseException | None]:
        """`publish_many` for messages already in wire form: (routing_key, body, properties).

        What the relay sends: it builds the AMQP properties of a row directly
        (`wire.RowHeader`) rather than an `aio_pika.Message` per row.
        """
        if self._exchange is None or self._channel is None:
            raise RuntimeError("Publisher.start() was not awaited")
        if via is not None:
            exchange_name = via
        else:
            exchange_name = self._direct_name if to_queue else self._exchange.name
        if not messages:
            return []
        if self.user_id is not None:
            for _, _, properties in messages:
                if isinstance(properties, Encoded):
                    if properties.user_id != self.user_id:
                        raise ValueError(
                            f"a header written for user {properties.user_id!r} cannot go out"
                            f" as {self.user_id!r}"
                        )
                else:
                    properties.user_id = self.user_id
        deadline = asyncio.get_running_loop().time() + self._timeout
        used = self._channel
        try:
            async with asyncio.timeout_at(deadline):
                channel = cast(aiormq.Channel, await used.get_underlay_channel())
                batch = await _send_batch(channel, exchange_name, messages)
        except Exception as exc:  # not sent, or not known to be: none of it counts as sent
            return [exc] * len(messages)
        await batch.settle(channel, deadline)
        out: list[BaseException | None] = []
        nacked = False
        for f in batch.futures:
            if f.cancelled():  # no confirm before the deadline (a late one is ignored)
                out.append(TimeoutError(f"no confirm within {self._timeout} s"))
            elif (error := f.exception()) is not None:
                out.append(error if isinstance(error, Exception) else PublishError(repr(error)))
                nacked = nacked or (
                    isinstance(error, DeliveryError) and isinstance(error.frame, Basic.Nack)
                )
            elif isinstance(f.result(), Basic.Ack):
                out.append(None)
            else:  # a returned message (when not raised) or an unexpected frame
                out.append(PublishError(f"broker did not confirm the message: {f.result()!r:.200}"))
        if nacked:
            await self._renew(used)
        return out

    async def publish(
        self,
        routing_key: str,
        message: aio_pika.Message,
        *,
        to_queue: bool = False,
        via: str | None = None,
    ) -> None:
        [err] = await self.publish_many([(routing_key, message)], to_queue=to_queue, via=via)
        if err is not None:
            raise PublishError(f"{routing_key}: {err!r}") from err


def user_of(connection: AbstractConnection) -> str:
    """The broker user a connection logged in as (what RabbitMQ checks a user_id against)."""
    return cast(aio_pika.Connection, connection).url.user or "guest"


# -- one write per batch ---------------------------------------------------------------------

_FRAME_HEAD = Struct(">BHI")  # frame type, channel, payload size
_publish_frames: dict[tuple[int, str, str], bytes] = {}


def _publish_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """The marshalled basic.publish method frame (mandatory), cached: it only names the route."""
    key = (channel, exchange, routing_key)
    frame = _publish_frames.get(key)
    if frame is None:
        if len(routing_key) > 255:
            raise ValueError(f"routing key longer than 255 characters: {routing_key[:50]}...")
        frame = pamqp.frame.marshal(
            Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True), channel
        )
        if len(_publish_frames) > 10_000:
            _publish_frames.clear()
        _publish_frames[key] = frame
    return frame


def _marshal(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Prepared]
) -> tuple[bytes, list[str]]:
    """Every frame of the batch in one buffer, and each message's id (set when missing)."""
    number = channel.number
    max_body = channel.max_content_size
    parts: list[bytes] = []
    ids: list[str] = []
    for routing_key, body, properties in messages:
        parts.append(_publish_frame(number, exchange, routing_key))
        if isinstance(properties, Encoded):  # its message id is the row's event id
            ids.append(properties.message_id)
            parts.append(_FRAME_HEAD.pack(FRAME_HEADER, number, len(properties.header)))
            parts.append(properties.header)
            parts.append(_FRAME_END)
        else:
            if not properties.message_id:  # aiormq matches a returned message by its id
                properties.message_id = uuid.uuid4().hex
            ids.append(properties.message_id)
            parts.append(pamqp.frame.marshal(ContentHeader(0, len(body), properties), number))
        for start in range(0, len(body), max_body):
            chunk = body[start : start + max_body]
            parts.append(_FRAME_HEAD.pack(FRAME_BODY, number, len(chunk)))
            parts.append(chunk)
            parts.append(_FRAME_END)
    return b"".join(parts), ids


_FRAME_END = bytes((FRAME_END,))


class _Batch:
    """The confirms of one batch: a future per message, watched in tag order.

    The futures are plain loop futures, not aiormq's (which it tracks in two sets with three
    callbacks each, to reject them when the channel or connection closes), and carry no
    callback of their own: `settle` waits for the first one not yet settled, with the
    channel's closing, and once woken walks past every one settled since (a multiple confirm
    settles hundreds at once). A callback per future, scheduled by the loop as each one
    settled, was a sixth of the relay's CPU. What aiormq keeps of each message's id (to match
    a return to it) is forgotten once the batch is settled or abandoned."""

    __slots__ = ("_by_id", "_first", "_ids", "futures")

    def __init__(self, by_id: dict[str, int], first: int) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self._ids: list[str] = []
        self._by_id = by_id
        self._first = first  # the delivery tag of the first message

    def add(self, loop: asyncio.AbstractEventLoop, message_id: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        self.futures.append(future)
        self._ids.append(message_id)
        return future

    def _forget(self) -> None:
        by_id = self._by_id
        for tag, message_id in enumerate(self._ids, start=self._first):
            if by_id.get(message_id) == tag:  # as aiormq forgets a confirmed message's id
                del by_id[message_id]

    def abandon(self) -> None:
        for future in self.futures:
            future.cancel()
        self._forget()

    async def settle(self, channel: aiormq.Channel, deadline: float) -> None:
        """Wait for every confirm, the channel closing, or the deadline; settle what is left."""
        loop = asyncio.get_running_loop()
        futures = self.futures
        at = 0  # every future before it is settled
        closing = channel.closing
        closed = False
        try:
            while True:
                while at < len(futures) and futures[at].done():
                    at += 1
                closed = closing.done()
                left = deadline - loop.time()
                if at == len(futures) or closed or left <= 0:
                    break
                await asyncio.wait(
                    (futures[at], closing), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            if not closing.done():
                closing.cancel()  # only stops this observer (and is then no sign of a close)
            self._forget()
        if at == len(futures):
            return
        if closed:
            reason = None if closing.cancelled() else closing.exception()
            error = (
                reason
                if isinstance(reason, Exception)
                else ChannelInvalidStateError(f"the channel closed before the confirm: {reason!r}")
            )
            for future in futures:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # read here: no "exception never retrieved" warning
        else:
            for future in futures:
                if not future.done():
                    future.cancel()  # timed out; a late confirm is then ignored (logged at debug)


async def _send_batch(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Prepared]
) -> _Batch:
    """Hand the batch to the connection's writer as one buffer; a confirm future per message.

    The bookkeeping is aiormq's own (`Channel.basic_publish`): the next delivery tags under
    the channel lock, each tag's future in `confirmations` (settled by aiormq's reader on
    basic.ack / basic.nack, and by basic.return through the message id). If the batch does
    not reach the writer's queue (cancelled, channel closed), all of it is undone.
    """
    if not channel.publisher_confirms:
        raise RuntimeError("the channel has no publisher confirms")
    payload, message_ids = _marshal(channel, exchange, messages)
    loop = asyncio.get_running_loop()
    async with channel.lock:
        first = channel.delivery_tag + 1
        confirmations = channel.confirmations
        by_id = channel.message_id_delivery_tag
        batch = _Batch(by_id, first)
        drain: asyncio.Future[Any] | None = None
        try:
            for tag, message_id in enumerate(message_ids, start=first):
                confirmations[tag] = batch.add(loop, message_id)
                by_id[message_id] = tag
            channel.delivery_tag = first + len(message_ids) - 1
            drain = channel.create_future()  # aiormq's: failed if the connection goes
            await channel.write_queue.put(
                ChannelFrame(payload=payload, should_close=False, drain_future=drain)
            )
        except BaseException:
            channel.delivery_tag = first - 1
            for tag, message_id in enumerate(message_ids, start=first):
                confirmations.pop(tag, None)
                if by_id.get(message_id) == tag:
                    del by_id[message_id]
            batch.abandon()
            if drain is not None:
                drain.cancel()
            raise
    try:
        await drain  # written to the socket
    except BaseException:
        batch.abandon()  # the frames may or may not have left: none counts as confirmed
        raise
    return batch
