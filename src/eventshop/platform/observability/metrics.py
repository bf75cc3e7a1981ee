"""Prometheus metrics: what every service exposes at GET /metrics.

Counted where it happens (cheap: a counter increment per event, a histogram observation per
handler call):
    eventshop_events_handled_total{service, event_type}     committed by the consumer
    eventshop_events_failed_total{service, event_type}      handler runs that raised
    eventshop_events_retried_total{service, event_type}     sent up the retry ladder
    eventshop_events_parked_total{service, event_type, reason}   handler_failed | rejected
    eventshop_events_duplicate_total{service}               redeliveries the inbox absorbed
    eventshop_handler_duration_seconds{service, event_type} one observation per handler call
    eventshop_outbox_published_total{service} / _publish_failed_total{service}
    eventshop_http_requests_total{service, method, route, status}
    eventshop_http_request_duration_seconds{service, method, route}
    eventshop_http_requests_in_progress{service}
    (orders) eventshop_saga_outcomes_total / eventshop_saga_duration_seconds{outcome, reason}

Read when scraped (`refresh`, bounded by a timeout so a scrape never hangs on an outage):
    eventshop_outbox_backlog{service}, eventshop_outbox_oldest_age_seconds{service}
    eventshop_queue_messages{service, queue}, eventshop_queue_consumers{service, queue}
      for the service's queue, each rung of its retry ladder and its parking lot
    eventshop_up{service, dependency}  1 when the last scrape reached it

One process is one service, so the default registry holds one service's metrics; the
`service` label still keeps them apart where tests run several in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from aio_pika.abc import AbstractConnection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from eventshop.platform.bus.topology import queue_depth

#: handler and HTTP latencies: 1 ms .. 30 s
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

EVENTS_HANDLED = Counter(
    "eventshop_events_handled_total",
    "Events whose handler ran and whose effect was committed",
    ["service", "event_type"],
)
EVENTS_FAILED = Counter(
    "eventshop_events_failed_total",
    "Handler runs that raised (each attempt counts)",
    ["service", "event_type"],
)
EVENTS_RETRIED = Counter(
    "eventshop_events_retried_total",
    "Events sent up the retry ladder",
    ["service", "event_type"],
)
EVENTS_PARKED = Counter(
    "eventshop_events_parked_total",
    "Events moved to the parking lot (handler_failed: after the last retry; rejected: "
    "undecodable, failing its contract or without a handler)",
    ["service", "event_type", "reason"],
)
EVENTS_DUPLICATE = Counter(
    "eventshop_events_duplicate_total",
    "Redelivered events the inbox recognised (acknowledged, no effect)",
    ["service"],
)
HANDLER_SECONDS = Histogram(
    "eventshop_handler_duration_seconds",
    "Time in a handler call (a batch handler's call is one observation)",
    ["service", "event_type"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PUBLISHED = Counter(
    "eventshop_outbox_published_total", "Outbox rows published and confirmed", ["service"]
)
OUTBOX_PUBLISH_FAILED = Counter(
    "eventshop_outbox_publish_failed_total",
    "Outbox rows whose publish was not confirmed (they are tried again)",
    ["service"],
)
OUTBOX_BACKLOG = Gauge(
    "eventshop_outbox_backlog", "Outbox rows not yet published (read when scraped)", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "eventshop_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row, 0 when none (read when scraped)",
    ["service"],
)
QUEUE_MESSAGES = Gauge(
    "eventshop_queue_messages",
    "Messages ready in the service's queues (read from the broker when scraped)",
    ["service", "queue"],
)
QUEUE_CONSUMERS = Gauge(
    "eventshop_queue_consumers",
    "Consumers attached to the service's queues (read from the broker when scraped)",
    ["service", "queue"],
)
DEPENDENCY_UP = Gauge(
    "eventshop_up",
    "1 when the last scrape reached the dependency (database, broker), else 0",
    ["service", "dependency"],
)
HTTP_REQUESTS = Counter(
    "eventshop_http_requests_total",
    "HTTP requests answered",
    ["service", "method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "eventshop_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "eventshop_http_requests_in_progress", "HTTP requests being answered", ["service"]
)


class EventMetrics:
    """One consumer's counters, their labelled children cached per event type.

    `Counter.labels()` takes a lock and builds a key on every call; the consumer counts per
    event, so it keeps the children it has used."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._handled: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}
        self._duplicates = EVENTS_DUPLICATE.labels(service)

    def handled(self, event_type: str, n: int = 1) -> None:
        child = self._handled.get(event_type)
        if child is None:
            child = self._handled[event_type] = EVENTS_HANDLED.labels(self.service, event_type)
        child.inc(n)

    def latency(self, event_type: str, seconds: float) -> None:
        child = self._latency.get(event_type)
        if child is None:
            child = self._latency[event_type] = HANDLER_SECONDS.labels(self.service, event_type)
        child.observe(seconds)

    def duplicates(self, n: int) -> None:
        if n:
            self._duplicates.inc(n)

    def failed(self, event_type: str) -> None:
        EVENTS_FAILED.labels(self.service, event_type).inc()

    def retried(self, event_type: str) -> None:
        EVENTS_RETRIED.labels(self.service, event_type).inc()

    def parked(self, event_type: str | None, reason: str) -> None:
        EVENTS_PARKED.labels(self.service, event_type or "unknown", reason).inc()


# -- read when scraped -----------------------------------------------------------------------

OUTBOX_STATE = """
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM outbox
"""


async def refresh(
    service: str,
    *,
    pool: asyncpg.Pool | None,
    connection: AbstractConnection | None,
    queues: Sequence[str] = (),
    timeout_s: float = 2.0,
) -> None:
    """Read the outbox backlog and the queue depths now, into their gauges."""
    await asyncio.gather(
        _refresh_outbox(service, pool, timeout_s),
        _refresh_queues(service, connection, queues, timeout_s),
    )


async def _refresh_outbox(service: str, pool: asyncpg.Pool | None, timeout_s: float) -> None:
    if pool is None:
        return
    try:
        async with asyncio.timeout(timeout_s), pool.acquire() as conn:
            row = await conn.fetchrow(OUTBOX_STATE)
    except Exception:  # the database is away: the gauges keep their last values
        DEPENDENCY_UP.labels(service, "database").set(0)
        return
    DEPENDENCY_UP.labels(service, "database").set(1)
    OUTBOX_BACKLOG.labels(service).set(row["backlog"])
    OUTBOX_OLDEST_AGE.labels(service).set(row["oldest_age_s"])


async def _refresh_queues(
    service: str, connection: AbstractConnection | None, queues: Sequence[str], timeout_s: float
) -> None:
    if connection is None:
        return
    if connection.is_closed:
        DEPENDENCY_UP.labels(service, "broker").set(0)
        return
    try:
        async with asyncio.timeout(timeout_s):
            channel = await connection.channel()
            try:
                for name in queues:
                    # a passive declare of a missing queue closes the channel: one at a time
                    if channel.is_closed:
                        channel = await connection.channel()
                    try:
                        depth, consumers = await queue_depth(channel, name)
                    except Exception:
                        continue
                    QUEUE_MESSAGES.labels(service, name).set(depth)
                    QUEUE_CONSUMERS.labels(service, name).set(consumers)
            finally:
                if not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.close()
    except Exception:
        DEPENDENCY_UP.labels(service, "broker").set(0)
        return
    DEPENDENCY_UP.labels(service, "broker").set(1)


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
