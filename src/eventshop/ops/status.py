"""The platform's status, as `eventshop status` shows it: per service, whether it answers
(/health/live) and is ready (/health/ready), its events handled/failed/retried/parked since it
started (its /metrics), its outbox backlog and the age of the oldest unsent row (PostgreSQL),
and for a consuming service its queue's depth and consumers and its parking lot's depth
(RabbitMQ). What cannot be read is None, never an exception: a service that is down is
reported down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractConnection

from eventshop.ops.jsonable import iso_utc
from eventshop.ops.parked import CONSUMING
from eventshop.platform.bus.topology import queue_depth
from eventshop.services import METRICS_PORTS, PORTS

#: the counters of every event a service consumed, by what became of it (its /metrics)
EVENT_COUNTERS = {
    "handled": "eventshop_events_handled",
    "failed": "eventshop_events_failed",
    "retried": "eventshop_events_retried",
    "parked_total": "eventshop_events_parked",
}


@dataclass(frozen=True)
class ServiceStatus:
    """One service; None: not read (down, no broker connection, not a consuming service)."""

    service: str
    #: its /health/live answered 200: the process is up
    live: bool
    #: its /health/ready answered 200: it serves (database, broker, consumers attached)
    ready: bool
    #: messages ready in its queue (unacknowledged ones are not counted by AMQP)
    queue: int | None = None
    #: consumers attached to its queue
    consumers: int | None = None
    #: messages in its parking lot (`<service>.parked`)
    parked: int | None = None
    #: outbox rows not yet sent, and the age in seconds of the oldest of them
    outbox: int | None = None
    outbox_oldest_s: float | None = None
    #: events consumed since it started, by outcome (its /metrics; None when it is down)
    handled: float | None = None
    failed: float | None = None
    retried: float | None = None
    parked_total: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PlatformStatus:
    #: when it was read
    at: datetime
    services: list[ServiceStatus]

    def to_json(self) -> dict[str, Any]:
        return {"at": iso_utc(self.at), "services": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        """One object per service: what `eventshop status --json` prints."""
        return [s.to_json() for s in self.services]

    def of(self, service: str) -> ServiceStatus:
        return next(s for s in self.services if s.service == service)


def default_urls(services: Sequence[str]) -> dict[str, str]:
    """Where an operator's tool finds each service (EVENTSHOP_SERVICE_URLS, else loopback)."""
    from eventshop.tooling.supervise import service_url

    return {s: service_url(s) for s in services}


def metrics_url(service: str, base: str) -> str:
    """Its /metrics: the gateway's is on an internal port, not its public one."""
    port = METRICS_PORTS.get(service)
    if port is not None and port != PORTS.get(service):
        base = base.rsplit(":", 1)[0] + f":{port}"
    return f"{base}/metrics"


async def _probe(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _counts(client: httpx.AsyncClient, url: str) -> dict[str, float | None]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        answer = await client.get(url)
        if answer.status_code != 200:
            return dict.fromkeys(EVENT_COUNTERS)
        families = list(text_string_to_metric_families(answer.text))
    except (httpx.HTTPError, ValueError):
        return dict.fromkeys(EVENT_COUNTERS)
    totals = {
        f.name: sum(x.value for x in f.samples if x.name.endswith("_total")) for f in families
    }
    return {key: totals.get(name, 0.0) for key, name in EVENT_COUNTERS.items()}


async def _http(service: str, base: str, timeout_s: float) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        live, ready, counted = await asyncio.gather(
            _probe(client, f"{base}/health/live"),
            _probe(client, f"{base}/health/ready"),
            _counts(client, metrics_url(service, base)),
        )
    return {"live": live or ready, "ready": ready, **counted}


async def _outbox(db: asyncpg.Connection | asyncpg.Pool | None, service: str) -> dict[str, Any]:
    if db is None:
        return {}
    try:
        row = await db.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age"
            f' FROM "{service}".outbox'
        )
    except (asyncpg.PostgresError, OSError):
        return {}
    return {"outbox": row["n"], "outbox_oldest_s": row["age"]} if row is not None else {}


async def _queues(conn: AbstractConnection | None, service: str) -> dict[str, Any]:
    if conn is None:
        return {}
    found: dict[str, Any] = {}
    for key, name in (("queue", service), ("parked", f"{service}.parked")):
        try:
            channel = await conn.channel()
        except Exception:
            return found
        try:
            depth, consumers = await queue_depth(channel, name)
            found[key] = depth
            if key == "queue":
                found["consumers"] = consumers
        except Exception:  # not declared yet (never started), or the broker went away
            pass
        finally:
            if not channel.is_closed:
                await channel.close()
    return found


async def platform_status(
    db: asyncpg.Connection | asyncpg.Pool | None,
    conn: AbstractConnection | None,
    *,
    services: Sequence[str] | None = None,
    urls: Mapping[str, str] | None = None,
    consuming: Collection[str] = CONSUMING,
    timeout_s: float = 2.0,
) -> PlatformStatus:
    """Every service's status (`services`, default every service of the platform, in PORTS'
    order), read over HTTP at `urls` (default: EVENTSHOP_SERVICE_URLS or loopback; needed for
    a service not in PORTS), from the database `db` (the outbox of the schema named for the
    service) and the broker `conn` (the queue and parking lot of each of `consuming`); `db`
    or `conn` may be None, and then what it would tell is None."""
    names = list(services or PORTS)
    missing = [s for s in names if s not in PORTS and s not in (urls or {})]
    if missing:
        raise ValueError(f"no URL for {', '.join(missing)}: not services of the platform")
    where = {**default_urls([s for s in names if s in PORTS and s not in (urls or {})])}
    where.update(urls or {})
    http = await asyncio.gather(*(_http(s, where[s], timeout_s) for s in names))
    found: list[ServiceStatus] = []
    for s, answered in zip(names, http, strict=True):
        queues = await _queues(conn, s) if s in consuming else {}
        read = {**answered, **await _outbox(db, s), **queues}
        found.append(ServiceStatus(service=s, **read))
    return PlatformStatus(at=datetime.now(UTC), services=found)
