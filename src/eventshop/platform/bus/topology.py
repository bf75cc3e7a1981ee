"""The broker topology, declared from code at start-up (docs/DESIGN.md §5.1).

    eventshop.events (topic, durable)
        --<routing keys a service handles>--> <service>            (quorum queue)
    <service>.retry.<delay>   classic durable, x-message-ttl=<delay>, dead-letters back to <service>
    <service>.parked          quorum queue: the parking lot, read by operators

A failing message is re-published by the consumer to the delay queue of its attempt through
the default exchange; when its TTL runs out RabbitMQ dead-letters it back into the service
queue. RabbitMQ 3.10 has no delayed-message plugin here, and per-queue TTL keeps expiry FIFO.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue


class TopologyMismatchError(RuntimeError):
    """A queue or exchange already exists with other arguments than the code declares."""


@dataclass(frozen=True)
class ServiceQueues:
    """The names and arguments of one consuming service's queues."""

    service: str
    routing_keys: tuple[str, ...]
    retry_delays_ms: tuple[int, ...]

    @property
    def main(self) -> str:
        return self.service

    @property
    def parked(self) -> str:
        return f"{self.service}.parked"

    def retry(self, attempt: int) -> str:
        """The delay queue for the `attempt`-th failure (1-based)."""
        return f"{self.service}.retry.{self.retry_delays_ms[attempt - 1]}ms"

    @property
    def max_attempts(self) -> int:
        """Handler runs before parking: the first one plus one per rung of the ladder."""
        return len(self.retry_delays_ms) + 1

    def main_arguments(self) -> dict[str, object]:
        return {"x-queue-type": "quorum"}

    def retry_arguments(self, delay_ms: int) -> dict[str, object]:
        return {
            "x-queue-type": "classic",
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.main,
        }

    def parked_arguments(self) -> dict[str, object]:
        return {"x-queue-type": "quorum"}


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<what>queue|exchange) '(?P<name>[^']+)'.*?"
    r"received (?P<received>.+?) but current is (?P<current>.+)$"
)


def explain_precondition(exc: BaseException, declared: dict[str, object] | None = None) -> str:
    """Turn RabbitMQ's PRECONDITION_FAILED text into a sentence naming the difference."""
    text = str(exc)
    m = _INEQUIVALENT.search(text)
    if not m:
        return f"declaration refused by the broker: {text}"
    return (
        f"{m['what']} {m['name']!r} already exists with {m['arg']} = {m['current']}, "
        f"but the code declares {m['arg']} = {m['received']}"
        + (f" (declared arguments: {declared})" if declared else "")
        + f"; delete the {m['what']} or align the code"
    )


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    try:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatchError(explain_precondition(exc)) from None


async def _declare_queue(
    connection: aio_pika.abc.AbstractConnection, name: str, arguments: dict[str, object]
) -> None:
    # A refused declaration closes its channel, so each one gets a short-lived channel of its own.
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)  # type: ignore[arg-type]
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatchError(explain_precondition(exc, arguments)) from None
    finally:
        if not channel.is_closed:
            await channel.close()


async def declare_service_queues(
    connection: aio_pika.abc.AbstractConnection, exchange: str, queues: ServiceQueues
) -> None:
    """Declare (idempotently) a service's queue, its bindings, retry ladder and parking lot."""
    channel = await connection.channel()
    try:
        ex = await declare_exchange(channel, exchange)
    finally:
        await channel.close()
    await _declare_queue(connection, queues.main, queues.main_arguments())
    for delay in queues.retry_delays_ms:
        await _declare_queue(
            connection, f"{queues.service}.retry.{delay}ms", queues.retry_arguments(delay)
        )
    await _declare_queue(connection, queues.parked, queues.parked_arguments())
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queues.main, ensure=False)
        for key in queues.routing_keys:
            await queue.bind(ex, routing_key=key)
    finally:
        await channel.close()


async def queue_depth(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of an existing queue, by a passive declare."""
    queue: AbstractQueue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return result.message_count or 0, result.consumer_count or 0


def routing_keys(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(keys)))
