"""The broker, as the archive uses it: re-delivering a slice of the archive to one service's queue
(handlers.replay_events, behind POST /replay).

    result = await replay(pool=pool, publisher=publisher, connection=connection,
                          target="loyalty", flt=EventFilter(event_type="order.confirmed"),
                          limit=10_000)

Messages go through the replay exchange (`eventshop.replay`, direct: each service's queue is
bound to it by the service's name), so only that service receives them, never the other
subscribers of those event types. They carry app_id "archive" and the archive's broker user:
the target accepts them as replays (platform/bus/provenance.py). Each keeps its
original event id as message_id: the target's inbox makes an event it already handled a no-op,
so a replay is safe to repeat, and a service that did not exist yet gets the history. They are
published in archive order, a batch at a time, each batch pipelined and confirmed before the
next one is read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection

from eventshop.platform.bus.provenance import REPLAY_APP_ID
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import REPLAY_EXCHANGE
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.observability.logging import get_logger
from eventshop.services.archive import store
from eventshop.services.archive.domain import EventFilter

log = get_logger(__name__)

#: the most events one replay may re-deliver
MAX_REPLAY = 100_000
#: events read and published per round (bounded memory; one confirm wait each)
BATCH = 1_000


class UnknownQueueError(LookupError):
    """The target service has no queue: nothing would receive the replay."""


class ReplayError(RuntimeError):
    """The broker did not confirm part of a replay; the events before it were delivered."""

    def __init__(self, message: str, *, matched: int, replayed: int) -> None:
        super().__init__(message)
        self.matched = matched
        self.replayed = replayed


@dataclass(frozen=True)
class ReplayResult:
    #: archived events matching the filter (up to the limit)
    matched: int
    #: of those, how many the broker confirmed into the target queue (0 on a dry run)
    replayed: int


async def queue_exists(connection: AbstractConnection, name: str) -> bool:
    """Whether queue `name` exists, by a passive declare on a throwaway channel (the broker
    closes a channel whose passive declare fails)."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


async def replay(
    *,
    pool: asyncpg.Pool,
    publisher: Publisher,
    connection: AbstractConnection,
    target: str,
    flt: EventFilter,
    limit: int,
    dry_run: bool = False,
    batch: int = BATCH,
) -> ReplayResult:
    """Re-deliver up to `limit` archived events matching `flt`, in archive order, to the queue of
    service `target`. A dry run only counts them. Raises UnknownQueueError if the target has no
    queue, ReplayError if the broker fails to confirm a message (the rest is not sent)."""
    if not 1 <= limit <= MAX_REPLAY:
        raise ValueError(f"limit must be within 1..{MAX_REPLAY}")
    if not await queue_exists(connection, target):
        raise UnknownQueueError(f"service {target!r} has no queue")
    if dry_run:
        async with pool.acquire() as conn:
            return ReplayResult(
                matched=await store.count_events(conn, flt, limit=limit), replayed=0
            )

    matched = replayed = 0
    after = 0
    while matched < limit:
        async with pool.acquire() as conn:
            events = await store.find_events(
                conn, flt, after=after, limit=min(batch, limit - matched)
            )
        if not events:
            break
        matched += len(events)
        after = events[-1].position
        results = await publisher.publish_many(
            [(target, message_from_envelope(e.envelope, app_id=REPLAY_APP_ID)) for e in events],
            via=REPLAY_EXCHANGE,
        )
        for event, error in zip(events, results, strict=True):
            if error is not None:
                raise ReplayError(
                    f"event {event.envelope.event_id} not confirmed into {target!r}: {error!r}",
                    matched=matched,
                    replayed=replayed,
                )
            replayed += 1
    log.info("archive.replayed", target=target, matched=matched, replayed=replayed)
    return ReplayResult(matched=matched, replayed=replayed)
