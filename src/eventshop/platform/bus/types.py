"""What a service hands the bus: a handler per event type, gathered in a `Subscription`.

A `Handler` gets the unit of work of the event's transaction (emit into the outbox there), the
envelope and the decoded payload; a `BatchHandler` gets many events of its type in one call.
The consumer (consumer.py) runs them; `ConsumerStats` is what it counts while doing so.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventshop.contracts import Envelope
from eventshop.platform.bus.outbox import UnitOfWork
from eventshop.platform.bus.topology import ServiceQueues


class ContractViolationError(Exception):
    """A handler's verdict that an event, valid in form, breaks the contract it is part of (a
    payment result for another payment than the order asked for): parked at once with this
    error, never retried, its transaction rolled back so it changes nothing."""


Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
#: what a batch handler gets: for each event, the arguments a `Handler` would get
Delivery = tuple[UnitOfWork, Envelope, Any]


@dataclass(frozen=True)
class BatchHandler:
    """A handler that can take many events of its type at once, e.g. with one multi-row INSERT.

        async def on_pings(events: Sequence[Delivery]) -> None:
            conn = events[0][0].conn  # one connection, one transaction for all of them
            await conn.execute("INSERT ... SELECT * FROM unnest($1::uuid[], ...)", ...)
            for uow, env, ping in events:
                uow.emit(Ponged(seq=ping.seq), aggregate_id=env.aggregate_id)

        Subscription("svc", {"selfcheck.pinged": BatchHandler(on_pings)})

    Each event keeps its own unit of work (its emits are caused by it). The consumer passes a
    window's consecutive events of this handler in one call, under one timeout; if the call
    fails, the window is handled again one event per savepoint, each through this same
    function with a single event, so only the failing events go up the retry ladder. It is
    also a plain `Handler` (one event).
    """

    many: Callable[[Sequence[Delivery]], Awaitable[None]]

    async def __call__(self, uow: UnitOfWork, envelope: Envelope, payload: Any) -> None:
        await self.many([(uow, envelope, payload)])


#: (connection, the payloads of a window's new events) -> their locks taken, in a fixed order
LockFirst = Callable[[Any, Sequence[Any]], Awaitable[None]]


@dataclass
class Subscription:
    """What one service consumes: a handler per event type, and its queue names."""

    service: str
    handlers: Mapping[str, Handler]
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000)
    #: how long a window waits, after its first message, for more to fill it (up to the
    #: prefetch). 0 for a service on the saga's path; a service nobody waits for (the archive,
    #: say) trades that much delay for fewer, larger transactions (ADR 0006)
    linger_s: float = 0.0
    #: takes, before any handler of a window runs, the row locks its handlers will take, in
    #: one order: what keeps replicas of a service from deadlocking across the events of their
    #: windows (ADR 0011). None: the handlers lock nothing two windows can both want
    lock_first: LockFirst | None = None
    #: False: no inbox row per event. Only for handlers that are idempotent by the event id
    #: themselves and emit nothing (the archive: its rows are unique by event id, written
    #: ON CONFLICT DO NOTHING), so that a redelivered event, run again, changes nothing. Its
    #: duplicates are then not counted.
    inbox: bool = True

    def handler_for(self, event_type: str) -> Handler | None:
        """The handler of `event_type`; a handler under "#" takes every type (the archive)."""
        return self.handlers.get(event_type) or self.handlers.get("#")

    @property
    def queues(self) -> ServiceQueues:
        return ServiceQueues(self.service, tuple(sorted(self.handlers)), self.retry_delays_ms)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    parked: int = 0
    batches: int = 0
    by_type: collections.Counter[str] = field(default_factory=collections.Counter)
