"""The failure policy: whose fault a failure is, and where a failed message goes next.

A database outage is not the message's fault: the batch is held and tried again until the
database is back (`is_infrastructure` tells which errors those are). A handler that fails sends
its event up the retry ladder (re-published, confirmed, to the delay queue of its attempt) and,
after the last rung, to the parking lot with the error, attempt count, original routing key and
first failure time in their headers. A body that can't be decoded, fails its contract, has a
type this service has no handler for or comes from the wrong publisher, or an event its handler
finds in breach of the contract (`ContractViolationError`), is parked at once: no retry would
change it.

The consumer publishes what these decisions return and settles the window (consumer.py); the
parking lot's operator tooling is parking.py.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg

from eventshop.platform.bus.received import AmqpMessage
from eventshop.platform.bus.topology import ServiceQueues
from eventshop.platform.bus.types import ContractViolationError
from eventshop.platform.bus.wire import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILURE,
    H_PARKED_AT,
    H_PARKED_BY,
    H_PRODUCER,
    H_ROUTING_KEY,
    header_int,
)

#: errors that say the database (not the message) is the problem: hold the batch and retry
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
    # too many connections, out of memory or disk: the server's state, not the message's
    asyncpg.exceptions.InsufficientResourcesError,
)


def is_infrastructure(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):  # a slow handler is the handler's failure
        return False
    return isinstance(exc, (*INFRASTRUCTURE_ERRORS, OSError))


@dataclass(frozen=True)
class Redirect:
    """Where a failed message goes: a rung of the retry ladder, or the parking lot."""

    queue: str
    message: aio_pika.Message
    attempt: int
    error: str
    parked: bool


def after_handler_failure(
    msg: AmqpMessage,
    exc: BaseException,
    queues: ServiceQueues,
    *,
    consumer: str,
    now: str,
) -> Redirect:
    """The retry ladder: the delay queue of the next attempt, the parking lot after the last
    (or at once, for a contract violation: no retry would change it)."""
    attempt = header_int(msg.headers, H_ATTEMPT) + 1
    error = f"{type(exc).__name__}: {exc}"[:1_000]
    if attempt < queues.max_attempts and not isinstance(exc, ContractViolationError):
        message = redirected(msg, attempt, error, now)
        return Redirect(queues.retry(attempt), message, attempt, error, parked=False)
    message = redirected(msg, attempt, error, now, park_by=consumer)
    return Redirect(queues.parked, message, attempt, error, parked=True)


def rejected(
    msg: AmqpMessage, error: str, queues: ServiceQueues, *, consumer: str, now: str
) -> Redirect:
    """A message no retry would change (undecodable, breaks its contract, no handler here):
    parked at once."""
    attempt = header_int(msg.headers, H_ATTEMPT) + 1
    message = redirected(msg, attempt, error, now, park_by=consumer)
    return Redirect(queues.parked, message, attempt, error, parked=True)


def redirected(
    msg: AmqpMessage, attempt: int, error: str, now: str, *, park_by: str | None = None
) -> aio_pika.Message:
    headers: dict[str, Any] = dict(msg.headers or {})
    headers[H_ATTEMPT] = attempt
    headers[H_ERROR] = error
    headers.setdefault(H_FIRST_FAILURE, now)
    headers.setdefault(H_ROUTING_KEY, msg.routing_key or msg.type or "")
    # the publisher re-stamps user_id with the consumer's own user; who first sent it stays here
    headers.setdefault(H_PRODUCER, msg.user_id or "")
    if park_by is not None:
        headers[H_PARKED_AT] = now
        headers[H_PARKED_BY] = park_by
    return aio_pika.Message(
        msg.body,
        headers=headers,
        content_type=msg.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=msg.message_id or str(uuid.uuid4()),
        type=msg.type,
        correlation_id=msg.correlation_id,
        timestamp=msg.timestamp or time.time(),
        app_id=msg.app_id,
    )
