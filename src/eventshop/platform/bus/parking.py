"""The parking lot: list, inspect, replay and purge parked messages (the CLI calls these).

Parked messages stay in RabbitMQ (`<service>.parked`). Reading one without removing it means
taking it unacknowledged and letting it go back when the channel closes; replaying one means
publishing it (confirmed) to the service's queue with its retry count reset, then acking the
parked copy. A crash between the two leaves a duplicate, which the inbox absorbs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues
from eventshop.platform.bus.wire import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILURE,
    H_PARKED_AT,
    H_ROUTING_KEY,
    header_int,
)


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

    @classmethod
    def of(cls, msg: AbstractIncomingMessage) -> ParkedMessage:
        h = dict(msg.headers or {})
        return cls(
            event_id=msg.message_id,
            event_type=msg.type,
            correlation_id=msg.correlation_id,
            error=str(h.get(H_ERROR, "")),
            attempts=header_int(h, H_ATTEMPT),
            original_routing_key=_s(h.get(H_ROUTING_KEY)),
            first_failure_at=_s(h.get(H_FIRST_FAILURE)),
            parked_at=_s(h.get(H_PARKED_AT)),
            headers=h,
            body=msg.body,
        )


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
) -> None:
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queue_name, ensure=False)
        for _ in range(limit):
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            await visit(msg, ParkedMessage.of(msg))
    finally:
        with contextlib.suppress(Exception):
            await channel.close()  # what was not acked goes back to the parking lot


async def list_parked(
    connection: AbstractConnection,
    queues: ServiceQueues,
    *,
    limit: int = 1_000,
    where: Filter | None = None,
) -> list[ParkedMessage]:
    found: list[ParkedMessage] = []

    async def visit(_: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is None or where(parked):
            found.append(parked)

    await _walk(connection, queues.parked, limit, visit)
    return found


async def replay_parked(
    connection: AbstractConnection,
    publisher: Publisher,
    queues: ServiceQueues,
    *,
    limit: int = 1_000,
    where: Filter | None = None,
) -> list[ParkedMessage]:
    """Re-publish matching parked messages to the service's queue; returns what was replayed."""
    replayed: list[ParkedMessage] = []

    async def visit(msg: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is not None and not where(parked):
            return
        headers = {k: v for k, v in parked.headers.items() if k != H_ATTEMPT}
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

    await _walk(connection, queues.parked, limit, visit)
    return replayed


async def purge_parked(
    connection: AbstractConnection,
    queues: ServiceQueues,
    *,
    limit: int = 100_000,
    where: Filter | None = None,
) -> list[ParkedMessage]:
    """Remove matching parked messages for good; returns what was removed."""
    removed: list[ParkedMessage] = []

    async def visit(msg: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        if where is None or where(parked):
            await msg.ack()
            removed.append(parked)

    await _walk(connection, queues.parked, limit, visit)
    return removed
