"""A starting process waits for its database and its broker, instead of failing at once.

When a whole deployment starts or restarts together (`docker compose restart`, pods scheduled
before the broker is up), a service can start before its broker or database listens. Failing
there leaves the wait to its supervisor's restart backoff, and each new start pays the process's
imports again: after a whole-project `docker compose restart`, every service restarted twice
and the platform was ready 52 s after the command, about 40 s after the broker was back.

So a connection refused or reset, an address that does not resolve yet, a server still
starting up or an attempt timing out is tried again, with a backoff (0.2 s, doubling to 2 s),
for up to `PlatformSettings.startup_wait_s`; then the last error is raised, and the process
exits as before. A refused login fails at once: waiting would not mend it.

While it waits, the client library's own lines about each failed attempt are dropped (`quiet`:
aiormq logs every refused connection as an ERROR, aio-pika adds that it reconnects in 5 s, which
it does not): `startup.waiting` says it once an attempt, as the warning it is, and an operator
alerting on errors is not woken by a wait that ends well. A wait in vain ends in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import aiormq.exceptions
import asyncpg

from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: worth another attempt: the server is not there yet (every AMQP connection error is an
#: OSError too)
NOT_YET: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.CannotConnectNowError)
#: never worth another: the server is there and refuses who we are
REFUSED: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.AuthenticationError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
#: what aio-pika's and aiormq's loggers say of a failed attempt to connect
AMQP_CLIENT_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection")


class _Dropped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """The records of the loggers `names` dropped, for the length of the block."""
    dropped = _Dropped()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(dropped)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(dropped)


async def once_reachable(
    what: str,
    connect: Callable[[], Awaitable[T]],
    *,
    within_s: float,
    first_delay_s: float = 0.2,
    max_delay_s: float = 2.0,
    quiet: Sequence[str] = (),
) -> T:
    """`connect()`, tried again while `what` (the database, the broker) is not reachable yet,
    for up to `within_s`; its result, or its last error. While a wait is allowed, the loggers
    `quiet` say nothing (what they would say of a failed attempt, `startup.waiting` says)."""
    with _quiet(quiet if within_s > 0 else ()):
        return await _attempts(what, connect, within_s, first_delay_s, max_delay_s)


async def _attempts(
    what: str,
    connect: Callable[[], Awaitable[T]],
    within_s: float,
    first_delay_s: float,
    max_delay_s: float,
) -> T:
    deadline = time.monotonic() + within_s
    delay = first_delay_s
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await connect()
        except REFUSED:
            raise
        except NOT_YET as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if within_s > 0:  # waited for it, in vain (with no wait: the caller's error)
                    log.error("startup.unreachable", what=what, attempts=attempts, error=repr(exc))
                raise
            log.warning(
                "startup.waiting", what=what, attempts=attempts, error=repr(exc), retry_in_s=delay
            )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, max_delay_s)
            continue
        if attempts > 1:
            log.info("startup.reached", what=what, attempts=attempts)
        return result
