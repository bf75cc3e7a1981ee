"""Operator commands: platform status and the dead-letter queues (parking lots).

    eventshop status
    eventshop dlq list    [--service S] [--type T] [--error TEXT] [--correlation-id C] [--since ISO]
    eventshop dlq show    EVENT_ID [--service S]
    eventshop dlq replay  [filters] [--dry-run] [--yes]
    eventshop dlq purge   [filters] [--dry-run] [--yes]

They talk to RabbitMQ as an operator (the guest user on the platform's vhost by default,
EVENTSHOP_AMQP_URL to override) and to each service's /health/ready.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import aio_pika
import aiormq
import asyncpg
import httpx
import typer
from rich.console import Console
from rich.table import Table

from eventshop.platform.bus.parking import ParkedMessage, list_parked, purge_parked, replay_parked
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues, queue_depth
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS

console = Console(stderr=True)
out = Console()
dlq = typer.Typer(
    help="dead-letter queues: list, show, replay, purge parked messages", no_args_is_help=True
)
CONSUMING = ["inventory", "orders", "payments", "notifications", "loyalty", "archive"]
T = TypeVar("T")
#: a service named with --service that is not one of PORTS (a new one, a test's): its name
#: must look like a queue name, and its parking lot must exist on the broker
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


def _queues(service: str) -> ServiceQueues:
    return ServiceQueues(service, (), tuple(PlatformSettings().retry_delays_ms))


ParkedFilterFn = Callable[[ParkedMessage], bool]


def parked_filter(
    event_type: str | None,
    error: str | None,
    correlation_id: str | None,
    since: datetime | None,
    event_id: str | None = None,
) -> Callable[[ParkedMessage], bool]:
    def match(p: ParkedMessage) -> bool:
        if event_id and p.event_id != event_id:
            return False
        if (
            event_type
            and p.event_type != event_type
            and not (event_type.endswith("*") and (p.event_type or "").startswith(event_type[:-1]))
        ):
            return False
        if error and error.lower() not in p.error.lower():
            return False
        if correlation_id and p.correlation_id != correlation_id:
            return False
        if since and p.parked_at:
            try:
                if datetime.fromisoformat(p.parked_at) < since.astimezone(
                    datetime.fromisoformat(p.parked_at).tzinfo
                ):
                    return False
            except ValueError:
                pass
        return True

    return match


async def _with_connection(work: Callable[[aio_pika.abc.AbstractConnection], Awaitable[T]]) -> T:
    conn = await aio_pika.connect(PlatformSettings().amqp_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


async def parked_of(
    conn: aio_pika.abc.AbstractConnection,
    services: list[str],
    where: Callable[[ParkedMessage], bool],
) -> list[tuple[str, ParkedMessage]]:
    found: list[tuple[str, ParkedMessage]] = []
    for s in services:
        try:
            found += [(s, p) for p in await list_parked(conn, _queues(s), where=where)]
        except aiormq.exceptions.ChannelNotFoundEntity:
            if s not in PORTS:  # named on purpose, yet unknown here: most likely a typo
                raise typer.BadParameter(f"no parking lot {s}.parked on the broker") from None
            continue  # that service has not started yet: it has no parking lot
    return found


def _services(service: str | None) -> list[str]:
    if service is None:
        return CONSUMING
    if service not in PORTS and not _SERVICE_NAME.fullmatch(service):
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(PORTS)}")
    return [service]


def _table(rows: list[tuple[str, ParkedMessage]]) -> Table:
    table = Table(title=f"{len(rows)} parked message(s)")
    for col in ("service", "event id", "type", "attempts", "parked at", "error"):
        table.add_column(col, overflow="fold")
    for service, p in rows:
        table.add_row(
            service,
            p.event_id or "-",
            p.event_type or "-",
            str(p.attempts),
            p.parked_at or "-",
            p.error[:120],
        )
    return table


Service = typer.Option(None, "--service", "-s", help="only this service's parking lot")
Type = typer.Option(None, "--type", "-t", help="event type (a trailing * matches a prefix)")
Error = typer.Option(None, "--error", "-e", help="text the error contains")
Correlation = typer.Option(None, "--correlation-id", "-c")
Since = typer.Option(None, "--since", help="parked at or after (ISO time)")
AsJson = typer.Option(False, "--json", help="one JSON document on stdout, for scripts")


def _plain(value: Any) -> Any:
    """A header value as JSON can carry it (AMQP tables hold bytes, datetimes, nested tables)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parked_json(service: str, p: ParkedMessage, *, body: bool) -> dict[str, Any]:
    """A parked message as `dlq list --json` and `dlq show --json` print it."""
    found: dict[str, Any] = {
        "service": service,
        "event_id": p.event_id,
        "event_type": p.event_type,
        "correlation_id": p.correlation_id,
        "error": p.error,
        "attempts": p.attempts,
        "first_failure_at": p.first_failure_at,
        "parked_at": p.parked_at,
        "original_routing_key": p.original_routing_key,
        "headers": _plain(p.headers),
    }
    if body:
        found["body"] = p.body.decode("utf-8", errors="replace")
    return found


@dlq.command("list")
def dlq_list(
    service: str | None = Service,
    event_type: str | None = Type,
    error: str | None = Error,
    correlation_id: str | None = Correlation,
    since: datetime | None = Since,
    as_json: bool = AsJson,
) -> None:
    """List parked messages (they stay parked). --json: a list of objects (parked_json)."""
    where = parked_filter(event_type, error, correlation_id, since)

    async def work(conn: aio_pika.abc.AbstractConnection) -> list[tuple[str, ParkedMessage]]:
        return await parked_of(conn, _services(service), where)

    found = asyncio.run(_with_connection(work))
    if as_json:
        print(json.dumps([parked_json(s, p, body=False) for s, p in found]))
        return
    out.print(_table(found))


@dlq.command("show")
def dlq_show(event_id: str, service: str | None = Service, as_json: bool = AsJson) -> None:
    """Show one parked message whole: headers and body. --json: a list of objects, with body."""
    where = parked_filter(None, None, None, None, event_id=event_id)

    async def work(conn: aio_pika.abc.AbstractConnection) -> list[tuple[str, ParkedMessage]]:
        return await parked_of(conn, _services(service), where)

    found = asyncio.run(_with_connection(work))
    if not found:
        console.print(f"[red]no parked message {event_id}[/]")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps([parked_json(s, p, body=True) for s, p in found]))
        return
    for s, p in found:
        out.print(f"[bold]{s}[/] {p.event_type} {p.event_id}")
        for k, v in sorted(p.headers.items()):
            out.print(f"  {k}: {v}")
        out.print(p.body.decode(errors="replace"))


_PAST = {"replay": "replayed", "purge": "purged"}


async def act_on_parked(
    conn: aio_pika.abc.AbstractConnection,
    action: str,
    services: list[str],
    where: ParkedFilterFn,
) -> list[tuple[str, ParkedMessage]]:
    """Replay (to their service's queue, as the operator, under their producer's name) or
    purge the parked messages `where` matches in these services' parking lots; what was."""
    done: list[tuple[str, ParkedMessage]] = []
    publisher = Publisher(conn, PlatformSettings().exchange, impersonate=True)
    await publisher.start()
    try:
        for s in services:
            if action == "replay":
                acted = await replay_parked(conn, publisher, _queues(s), where=where)
            else:
                acted = await purge_parked(conn, _queues(s), where=where)
            done += [(s, p) for p in acted]
    finally:
        await publisher.close()
    return done


def _act(
    action: str,
    service: str | None,
    where: Callable[[ParkedMessage], bool],
    dry_run: bool,
    yes: bool,
) -> None:
    async def preview(conn: aio_pika.abc.AbstractConnection) -> list[tuple[str, ParkedMessage]]:
        return await parked_of(conn, _services(service), where)

    matched = asyncio.run(_with_connection(preview))
    out.print(_table(matched))
    if dry_run or not matched:
        console.print(
            f"{'dry run: ' if dry_run else ''}{len(matched)} message(s) would be {_PAST[action]}"
        )
        return
    if not yes and not typer.confirm(f"{action} {len(matched)} parked message(s)?"):
        raise typer.Abort()

    async def apply(conn: aio_pika.abc.AbstractConnection) -> int:
        services = sorted({s for s, _ in matched})
        return len(await act_on_parked(conn, action, services, where))

    console.print(f"{_PAST[action]} {asyncio.run(_with_connection(apply))} message(s)")


def _dlq_action(action: str, summary: str) -> None:
    """`dlq replay` and `dlq purge`: the same filters, one action each."""

    def command(
        service: str | None = Service,
        event_type: str | None = Type,
        error: str | None = Error,
        correlation_id: str | None = Correlation,
        since: datetime | None = Since,
        event_id: str | None = typer.Option(None, "--event-id"),
        dry_run: bool = typer.Option(False, "--dry-run"),
        yes: bool = typer.Option(False, "--yes", "-y"),
    ) -> None:
        where = parked_filter(event_type, error, correlation_id, since, event_id)
        _act(action, service, where, dry_run, yes)

    command.__doc__ = summary
    dlq.command(action)(command)


_dlq_action(
    "replay", "Re-publish matching parked messages to their service's queue (retry count reset)."
)
_dlq_action("purge", "Delete matching parked messages for good (asks first unless --yes).")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


#: the counters of every event a service consumed, by what became of it (its /metrics)
EVENT_COUNTERS = {
    "handled": "eventshop_events_handled",
    "failed": "eventshop_events_failed",
    "retried": "eventshop_events_retried",
    "parked_total": "eventshop_events_parked",
}


async def event_counts(timeout_s: float = 2.0) -> dict[str, dict[str, float | None]]:
    """Per service, the totals of EVENT_COUNTERS since it started, read from its /metrics
    (None for a service that did not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    from eventshop.services import METRICS_PORTS
    from eventshop.tooling.supervise import service_url

    async def one(client: httpx.AsyncClient, service: str) -> dict[str, float | None]:
        base = service_url(service)
        if METRICS_PORTS[service] != PORTS[service]:  # the gateway's, on an internal port
            base = base.rsplit(":", 1)[0] + f":{METRICS_PORTS[service]}"
        try:
            text = (await client.get(f"{base}/metrics", timeout=timeout_s)).text
        except httpx.HTTPError:
            return dict.fromkeys(EVENT_COUNTERS)
        totals = {family.name: sum(x.value for x in family.samples if x.name.endswith("_total"))
                  for family in text_string_to_metric_families(text)}  # fmt: skip
        return {key: totals.get(name, 0.0) for key, name in EVENT_COUNTERS.items()}

    async with httpx.AsyncClient() as client:
        found = await asyncio.gather(*(one(client, s) for s in PORTS))
    return dict(zip(PORTS, found, strict=True))


async def platform_status(
    db: asyncpg.Connection | asyncpg.Pool, conn: aio_pika.abc.AbstractConnection | None
) -> list[dict[str, Any]]:
    """Every service: ready or not (its /health/ready), its outbox backlog and the age of its
    oldest unsent row, and for a consuming service its queue's depth and consumers and its
    parking lot's depth (None where that could not be read: no broker connection, say)."""
    from eventshop.tooling.supervise import readiness

    ready, counted = await asyncio.gather(readiness(list(PORTS)), event_counts())
    rows: list[dict[str, Any]] = []
    for s in PORTS:
        row: dict[str, Any] = {"service": s, "ready": ready[s], **counted[s]}
        try:
            backlog = await db.fetchrow(
                f"SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age"
                f' FROM "{s}".outbox WHERE sent_at IS NULL'
            )
            row["outbox"], row["outbox_oldest_s"] = backlog["n"], backlog["age"]
        except asyncpg.PostgresError:
            row["outbox"] = row["outbox_oldest_s"] = None
        if conn is not None and s in CONSUMING:
            for key, name in (("queue", s), ("parked", f"{s}.parked")):
                channel = await conn.channel()
                try:
                    depth, consumers = await queue_depth(channel, name)
                    row[key] = depth
                    if key == "queue":
                        row["consumers"] = consumers
                except Exception:
                    row[key] = None
                finally:
                    if not channel.is_closed:
                        await channel.close()
        rows.append(row)
    return rows


def status(as_json: bool = AsJson) -> None:
    """Every service: ready or not, queue depth and consumers, outbox backlog, parked, events
    handled/failed/retried. --json: a list of objects, one per service (platform_status)."""

    async def gather() -> list[dict[str, Any]]:
        settings = PlatformSettings()
        db = await asyncpg.connect(settings.database_url)
        try:
            conn = await aio_pika.connect(settings.amqp_url)
        except Exception:
            conn = None
        try:
            return await platform_status(db, conn)
        finally:
            await db.close()
            if conn is not None:
                await conn.close()

    rows = asyncio.run(gather())
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="eventshop status")
    columns = ("service", "ready", "queue", "consumers", "outbox backlog", "parked", "handled",
               "failed", "retried")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right" if col not in ("service", "ready") else "left")
    for r in rows:
        table.add_row(
            r["service"],
            "[green]ready[/]" if r["ready"] else "[red]down[/]",
            _dash(r.get("queue")),
            _dash(r.get("consumers")),
            _dash(r.get("outbox")),
            _dash(r.get("parked")),
            *(_dash(None if r.get(k) is None else int(r[k])) for k in columns[-3:]),
        )
    out.print(table)
