"""Publishing with confirms: persistent, mandatory, pipelined.

`publish_many` sends a whole batch before waiting for any confirm, then waits for all of them
(bounded by a timeout): a confirm awaited one at a time caps any client near 2,300 messages/s
here. Each message gets its own result, so the outbox marks exactly the confirmed rows sent.
An unroutable message (mandatory, returned by the broker) and a nack are failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp.commands import Basic

from eventshop.platform.bus.topology import declare_exchange


class PublishError(RuntimeError):
    """A message the broker did not confirm: returned, nacked, timed out or connection lost."""


class Publisher:
    def __init__(
        self, connection: AbstractConnection, exchange: str, *, confirm_timeout_s: float = 10.0
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._timeout = confirm_timeout_s
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._default: AbstractExchange | None = None

    async def start(self) -> None:
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await declare_exchange(self._channel, self._exchange_name)
        self._default = self._channel.default_exchange

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def publish_many(
        self, messages: Sequence[tuple[str, aio_pika.Message]], *, to_queue: bool = False
    ) -> list[BaseException | None]:
        """Publish (routing_key, message) pairs; one result per message, None when confirmed.

        `to_queue=True` sends through the default exchange, the routing key naming a queue
        (the retry ladder, the parking lot, replays).
        """
        exchange = self._default if to_queue else self._exchange
        if exchange is None:
            raise RuntimeError("Publisher.start() was not awaited")
        if not messages:
            return []
        results = await asyncio.gather(
            *(
                exchange.publish(msg, routing_key=key, mandatory=True, timeout=self._timeout)
                for key, msg in messages
            ),
            return_exceptions=True,
        )
        out: list[BaseException | None] = []
        for r in results:
            if isinstance(r, BaseException):
                out.append(r if isinstance(r, Exception) else PublishError(repr(r)))
            elif isinstance(r, Basic.Ack):
                out.append(None)
            else:  # a returned message (when not raised) or an unexpected frame
                out.append(PublishError(f"broker did not confirm the message: {r!r:.200}"))
        return out

    async def publish(self, routing_key: str, message: aio_pika.Message, *, to_queue: bool = False) -> None:
        [err] = await self.publish_many([(routing_key, message)], to_queue=to_queue)
        if err is not None:
            raise PublishError(f"{routing_key}: {err!r}") from err
