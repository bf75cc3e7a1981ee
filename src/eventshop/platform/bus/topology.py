"""The broker topology, declared from code at start-up (docs/DESIGN.md §5.1).

    eventshop.events (topic, durable)
        --<routing keys a service handles>--> <service>            (quorum queue)
    <service>.delay.<delay>ms classic durable, x-message-ttl=<delay>, dead-letters back to <service>
                              (through <service>.direct)
    <service>.parked          quorum queue: the parking lot, read by operators
    <service>.direct (direct) --<queue name>--> each of the three above: the service's own way
                              into its queues (only its user and the operator may write to it)
    eventshop.replay (direct) --<service>--> <service>: the archive's replays

A failing message is re-published by the consumer to the delay queue of its attempt through
its own direct exchange; when its TTL runs out RabbitMQ dead-letters it back into the service
queue. RabbitMQ 3.10 has no delayed-message plugin here, and per-queue TTL keeps expiry FIFO.
No service may write to the default exchange: it reaches every queue, so a service allowed on
it could drop any event into any other service's queue (docs/SECURITY.md).

A message that never comes back from its consumer (the process dies handling it) or that a
consumer hands back (a nack with requeue) is counted by the quorum queue itself: after
`max_deliveries` the broker dead-letters it into the parking lot, through the same direct
exchange. That limit is a policy (`delivery_limit_policy`), not a queue argument: provisioning
sets it as the administrator, so queues declared before it exist get it too, and services need
no right they did not have (ADR 0008).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

#: the direct exchange the archive replays through, to one service's queue at a time
REPLAY_EXCHANGE = "eventshop.replay"


def direct_exchange_of(service: str) -> str:
    """The direct exchange into a service's own queues (retry ladder, parking lot)."""
    return f"{service}.direct"


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
    def direct(self) -> str:
        return direct_exchange_of(self.service)

    @property
    def parked(self) -> str:
        return f"{self.service}.parked"

    def retry(self, attempt: int) -> str:
        """The delay queue for the `attempt`-th failure (1-based)."""
        return self.delay_queue(self.retry_delays_ms[attempt - 1])

    def delay_queue(self, delay_ms: int) -> str:
        # Not `.retry.` as before the default exchange was closed to services: those queues
        # dead-letter through it, and RabbitMQ will not let a declaration change that. They
        # drain by themselves; `eventshop up` deletes them once empty.
        return f"{self.service}.delay.{delay_ms}ms"

    @property
    def all_names(self) -> tuple[str, ...]:
        """Its queue, the delay queues of its retry ladder, its parking lot."""
        retries = tuple(self.delay_queue(d) for d in self.retry_delays_ms)
        return (self.main, *retries, self.parked)

    @property
    def max_attempts(self) -> int:
        """Handler runs before parking: the first one plus one per rung of the ladder."""
        return len(self.retry_delays_ms) + 1

    def main_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"}

    def retry_arguments(self, delay_ms: int) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-message-ttl": delay_ms,
            # the service's own exchange: declaring a queue that dead-letters somewhere needs
            # the right to write there, and no service may write to the default exchange
            "x-dead-letter-exchange": self.direct,
            "x-dead-letter-routing-key": self.main,
        }

    def parked_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"}


#: the reason RabbitMQ writes in `x-death` when a quorum queue's delivery limit parks a message
DELIVERY_LIMIT_REASON = "delivery_limit"


@dataclass(frozen=True)
class DeliveryLimitPolicy:
    """A RabbitMQ policy: what `rabbitmqctl set_policy` and the management API's PUT take."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 10
    apply_to: str = "queues"


def delivery_limit_policy(service: str, max_deliveries: int) -> DeliveryLimitPolicy:
    """The policy that parks a message of the service's queue after `max_deliveries` deliveries.

    RabbitMQ's `delivery-limit` counts the returns a message may have: a limit of L delivers it
    L + 1 times, so L = max_deliveries - 1. It dead-letters through the service's own direct
    exchange, where the parking lot is bound by its own name, at least once (the source queue
    keeps the message until the parking lot has it; that strategy needs `reject-publish`, which
    changes nothing without a length limit). The pattern matches the main queue alone: the
    delay queues dead-letter back by their own arguments, and the parking lot must never park.
    """
    if max_deliveries < 2:
        raise ValueError("max_deliveries must be at least 2: 1 would park at every restart")
    queues = ServiceQueues(service, (), ())
    return DeliveryLimitPolicy(
        name=f"eventshop-delivery-limit-{service}",
        pattern=f"^{re.escape(queues.main)}$",
        definition={
            "delivery-limit": max_deliveries - 1,
            "dead-letter-exchange": queues.direct,
            "dead-letter-routing-key": queues.parked,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        },
    )


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


async def declare_direct_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    try:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatchError(explain_precondition(exc)) from None


async def _declare_queue(
    connection: aio_pika.abc.AbstractConnection, name: str, arguments: dict[str, Any]
) -> None:
    # A refused declaration closes its channel, so each one gets a short-lived channel of its own.
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
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
        direct = await declare_direct_exchange(channel, queues.direct)
        replay = await declare_direct_exchange(channel, REPLAY_EXCHANGE)
    finally:
        await channel.close()
    await _declare_queue(connection, queues.main, queues.main_arguments())
    for delay in queues.retry_delays_ms:
        await _declare_queue(connection, queues.delay_queue(delay), queues.retry_arguments(delay))
    await _declare_queue(connection, queues.parked, queues.parked_arguments())
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queues.main, ensure=False)
        for key in queues.routing_keys:
            await queue.bind(ex, routing_key=key)
        await queue.bind(replay, routing_key=queues.service)
        for name in queues.all_names:
            own = await channel.get_queue(name, ensure=False)
            await own.bind(direct, routing_key=name)
    finally:
        await channel.close()


async def queue_depth(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of an existing queue, by a passive declare."""
    queue: AbstractQueue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return result.message_count or 0, result.consumer_count or 0


def routing_keys(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(keys)))
