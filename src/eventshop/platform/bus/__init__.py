"""The reliable event bus: topology, publisher, outbox relay, consumer with inbox, parking lot.

aio-pika carries the AMQP (ADR 0001 says why it over aiormq, FastStream or a hand-written
client); what no client library does is here: the retry ladder, the parking lot, the
transactional outbox and the inbox.

    types.py      what a service hands the bus: Handler, BatchHandler, Delivery, Subscription,
                  and ContractViolationError (raise it to park an event at once)
    provenance.py who published a message (its broker user_id), and whether it may have
    outbox.py     the outbox writer: UnitOfWork, emit into the outbox in the same transaction
    relay.py      the outbox relay: publishes committed rows, confirmed, in order
    publisher.py  confirmed publishing, one socket write per batch (ADR 0001)
    topology.py   the exchange, each service's queue, retry ladder and parking lot
    wire.py       the AMQP message of an event, and the failure headers
    consumer.py   the consumer loop and settling: ack, or re-publish up the ladder, then ack;
                  it consumes on aiormq's channel and keeps itself attached (ADR 0017)
    received.py   a delivery as the consumer reads it, and what the bus reads of any message
    codec.py      the frames every event crosses, coded by the bus instead of pamqp's generic
                  walk, and the connection's frame reader (ADR 0018)
    window.py     a window of deliveries handled in one transaction (ADR 0003)
    inbox.py      the inbox: event ids recorded with the handler's effect
    failures.py   whose fault a failure is; the retry ladder and when to park
    parking.py    the parking lot's operator tooling: list, replay, purge
    node.py       BusNode: one service's connection, publisher, relay and consumer

A service imports what it needs from here: `from eventshop.platform.bus import UnitOfWork`.
The names are loaded on first use: observability.metrics imports bus.topology, and the
consumer and the relay import observability.metrics, so importing them here eagerly would
make a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventshop.platform.bus.node import BusNode
    from eventshop.platform.bus.outbox import UnitOfWork
    from eventshop.platform.bus.types import (
        BatchHandler,
        ContractViolationError,
        Delivery,
        Handler,
        Subscription,
    )

__all__ = [
    "BatchHandler",
    "BusNode",
    "ContractViolationError",
    "Delivery",
    "Handler",
    "Subscription",
    "UnitOfWork",
]

_HOMES = {
    "BatchHandler": "eventshop.platform.bus.types",
    "BusNode": "eventshop.platform.bus.node",
    "ContractViolationError": "eventshop.platform.bus.types",
    "Delivery": "eventshop.platform.bus.types",
    "Handler": "eventshop.platform.bus.types",
    "Subscription": "eventshop.platform.bus.types",
    "UnitOfWork": "eventshop.platform.bus.outbox",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
