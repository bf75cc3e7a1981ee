"""The parking lot: list, inspect, replay and purge parked messages (the CLI calls these).

Parked messages stay in RabbitMQ (`<service>.parked`). Reading one without removing it means
taking it unacknowledged and letting it go back when the channel closes; replaying one means
publishing it (confirmed) to the service's queue with its retry count reset, then acking the
parked copy. A crash between the two leaves a duplicate, which the inbox absorbs.

Two hands park a message. The consumer does, with the `x-error`, `x-attempt`, `x-parked-at`...
headers of failures.py. The broker does, when the service's queue has delivered it
`max_deliveries` times and never had it settled (its consumer died handling it, or handed it
back: ADR 0008): RabbitMQ's own `x-death` header then says `delivery_limit`, and nothing of
ours is there. `ParkedMessage` reads both the same way. A replayed copy leaves the broker's
dead-letter headers behind: RabbitMQ drops, as a dead-letter cycle, a message whose `x-death`
already names the queue the retry ladder sends it back to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import DELIVERY_LIMIT_REASON, ServiceQueues
from eventshop.platform.bus.wire import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILURE,
    H_PARKED_AT,
    H_PARKED_BY,
    H_ROUTING_KEY,
    header_int,
)
from eventshop.platform.settings import PlatformSettings

#: what RabbitMQ writes on a message it dead-letters; a replayed copy starts without them
BROKER_DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
)
#: left behind by a replay too: the copy is back in its queue, no longer parked or counted
_NOT_REPLAYED = (H_ATTEMPT, H_PARKED_AT, H_PARKED_BY, *BROKER_DEATH_HEADERS)


@dataclass(frozen=True)
class ParkedMessage:
    event_id: str | None
    event_type: str | None
    correlation_id: str | None
    error: str
    attempts: int
    original_routing_key: str | None
    first_failure_at: str | None
    parked_at: str | None
    headers: dict[str, Any]
    body: bytes
    #: parked by the broker after this many deliveries (its delivery limit), else None
    deliveries: int | None = None

    @classmethod
    def of(
        cls, msg: AbstractIncomingMessage, *, max_deliveries: int | None = None
    ) -> ParkedMessage:
        """`max_deliveries`: the limit the policy was set with (EVENTSHOP_MAX_DELIVERIES unless
        given), the only place that count lives: the broker writes none on the message."""
        h = dict(msg.headers or {})
        error = _s(h.get(H_ERROR)) or ""
        attempts = header_int(h, H_ATTEMPT)
        parked_at = _s(h.get(H_PARKED_AT))
        deliveries = None
        if (death := delivery_limit_death(h)) is not None:
            deliveries = max_deliveries or PlatformSettings().max_deliveries
            # the handler started that many times and never finished: a crash, not an error
            error = f"delivery limit reached ({deliveries} deliveries)" + (
                f"; before it, {error}" if error else ""
            )
            attempts += deliveries
            parked_at = _death_time(death)
        return cls(
            event_id=msg.message_id,
            event_type=msg.type,
            correlation_id=msg.correlation_id,
            error=error,
            attempts=attempts,
            original_routing_key=_s(h.get(H_ROUTING_KEY)),
            first_failure_at=_s(h.get(H_FIRST_FAILURE)),
            parked_at=parked_at,
            headers=h,
            body=msg.body,
            deliveries=deliveries,
        )


def delivery_limit_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The broker's record of parking this message for its delivery limit, if that is how it
    came to the parking lot: the latest `x-death` entry (RabbitMQ keeps the latest first) says
    `delivery_limit`, and the consumer has not parked it since (it would have set
    `x-parked-at`, which a replay removes)."""
    if H_PARKED_AT in headers:
        return None
    deaths = headers.get("x-death")
    if not isinstance(deaths, list | tuple) or not deaths or not isinstance(deaths[0], Mapping):
        return None
    latest: Mapping[str, Any] = deaths[0]
    return latest if _s(latest.get("reason")) == DELIVERY_LIMIT_REASON else None


def _death_time(death: Mapping[str, Any]) -> str | None:
    when = death.get("time")
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
    return _s(when)


def _s(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


Filter = Callable[[ParkedMessage], bool]


async def _walk(
    connection: AbstractConnection,
    queue_name: str,
    limit: int,
    visit: Callable[[AbstractIncomingMessage, ParkedMessage], Any],
    max_deliveries: int | None = None,
) -> None:
    counted = max_deliveries or PlatformSettings().max_deliveries
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queue_name, ensure=False)
        for _ in range(limit):
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            await visit(msg, ParkedMessage.of(msg, max_deliveries=counted))
    finally:
        with contextlib.suppress(Exception):
            await channel.close()  # what was not acked goes back to the parking lot


async def list_parked(
    connection: AbstractConnection,
    queues: ServiceQueues,
    *,
    limit: int = 1_000,
    where: Filter | None = None,
    max_deliveries: int | None = None,
) -> list[ParkedMessage]:
    """Matching parked messages, left parked. `max_deliveries` is what the broker-parked ones
    are said to have had (EVENTSHOP_MAX_DELIVERIES unless given)."""
    found: list[ParkedMessage] = []

    async def visit(_: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is None or where(parked):
            found.append(parked)

    await _walk(connection, queues.parked, limit, visit, max_deliveries)
    return found


async def replay_parked(
    connection: AbstractConnection,
    publisher: Publisher,
    queues: ServiceQueues,
    *,
    limit: int = 1_000,
    where: Filter | None = None,
    max_deliveries: int | None = None,
) -> list[ParkedMessage]:
    """Re-publish matching parked messages to the service's queue; returns what was replayed.

    The copy starts a new life: no attempt count, no parking marks, none of the broker's
    dead-letter headers (the queue counts its deliveries afresh in any case). What went wrong
    before stays in `x-error`."""
    replayed: list[ParkedMessage] = []

    async def visit(msg: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is not None and not where(parked):
            return
        headers = {k: v for k, v in parked.headers.items() if k not in _NOT_REPLAYED}
        if parked.deliveries is not None:
            headers[H_ERROR] = parked.error  # the broker's reason, kept in our header
        headers["x-replayed-from-parking"] = True
        await publisher.publish(
            queues.main,
            aio_pika.Message(
                msg.body,
                headers=headers,
                content_type=msg.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=msg.message_id,
                type=msg.type,
                correlation_id=msg.correlation_id,
                timestamp=msg.timestamp,
                app_id=msg.app_id,
                # the service's own user, as it parked it: the operator's user may impersonate
                user_id=msg.user_id,
            ),
            via=queues.direct,
        )
        await msg.ack()
        replayed.append(parked)

    await _walk(connection, queues.parked, limit, visit, max_deliveries)
    return replayed


async def purge_parked(
    connection: AbstractConnection,
    queues: ServiceQueues,
    *,
    limit: int = 100_000,
    where: Filter | None = None,
    max_deliveries: int | None = None,
) -> list[ParkedMessage]:
    """Remove matching parked messages for good; returns what was removed."""
    removed: list[ParkedMessage] = []

    async def visit(msg: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is None or where(parked):
            await msg.ack()
            removed.append(parked)

    await _walk(connection, queues.parked, limit, visit, max_deliveries)
    return removed
