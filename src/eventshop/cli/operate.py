"""Operator commands: platform status and the dead-letter queues (parking lots).

    eventshop status [--json]
    eventshop dlq list    [--service S] [--type T] [--error TEXT] [--correlation-id C] [--since ISO]
                          [--json]
    eventshop dlq show    EVENT_ID [--service S] [--json]
    eventshop dlq replay  [filters] [--dry-run] [--yes]
    eventshop dlq purge   [filters] [--dry-run] [--yes]

They talk to RabbitMQ as an operator (the guest user on the platform's vhost by default,
EVENTSHOP_AMQP_URL to override) and to each service's /health/ready. What they read is
eventshop.ops.status and eventshop.ops.parked (the console reads through those too); this
module renders it and asks before acting. `--json` prints one JSON document on stdout and
nothing else there.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import aio_pika
import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from eventshop.ops import parked as ops_parked
from eventshop.ops import status as ops_status
from eventshop.ops.parked import (
    CONSUMING,
    ParkedFilterFn,
    act_on_parked,
    parked_filter,
    parked_json,
)
from eventshop.platform.bus.node import connect
from eventshop.platform.bus.parking import ParkedMessage
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS

console = Console(stderr=True)
out = Console()
dlq = typer.Typer(
    help="dead-letter queues: list, show, replay, purge parked messages", no_args_is_help=True
)
T = TypeVar("T")
#: a service named with --service that is not one of PORTS (a new one, a test's): its name
#: must look like a queue name, and its parking lot must exist on the broker
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


async def _with_connection(work: Callable[[aio_pika.abc.AbstractConnection], Awaitable[T]]) -> T:
    conn = await connect(PlatformSettings().amqp_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


async def parked_of(
    conn: aio_pika.abc.AbstractConnection,
    services: Sequence[str],
    where: ParkedFilterFn,
) -> list[tuple[str, ParkedMessage]]:
    """eventshop.ops.parked.parked_of, an unknown parking lot a bad --service."""
    try:
        return await ops_parked.parked_of(conn, services, where)
    except ops_parked.UnknownParkingLotError as exc:
        raise typer.BadParameter(str(exc)) from None


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
ListJson = typer.Option(
    False,
    "--json",
    help="one JSON list on stdout, a message an object: service, event_id, event_type,"
    " correlation_id, error, attempts, original_routing_key, first_failure_at, parked_at"
    " (ISO 8601 UTC), headers",
)
ShowJson = typer.Option(
    False,
    "--json",
    help="one JSON list on stdout (the event may be parked for several services), each as"
    " `dlq list --json` shows it plus body (text) and body_bytes",
)


@dlq.command("list")
def dlq_list(
    service: str | None = Service,
    event_type: str | None = Type,
    error: str | None = Error,
    correlation_id: str | None = Correlation,
    since: datetime | None = Since,
    as_json: bool = ListJson,
) -> None:
    """List parked messages (they stay parked)."""
    where = parked_filter(event_type, error, correlation_id, since)

    async def work(conn: aio_pika.abc.AbstractConnection) -> list[tuple[str, ParkedMessage]]:
        return await parked_of(conn, _services(service), where)

    found = asyncio.run(_with_connection(work))
    if as_json:
        print(json.dumps([parked_json(s, p, body=False) for s, p in found]))
        return
    out.print(_table(found))


@dlq.command("show")
def dlq_show(event_id: str, service: str | None = Service, as_json: bool = ShowJson) -> None:
    """Show one parked message whole: headers and body (exit 1: not parked)."""
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


async def platform_status(
    db: asyncpg.Connection | asyncpg.Pool | None, conn: aio_pika.abc.AbstractConnection | None
) -> list[dict[str, Any]]:
    """eventshop.ops.status.platform_status's rows (what `eventshop status --json` prints)."""
    return (await ops_status.platform_status(db, conn)).rows()


async def _read_status() -> ops_status.PlatformStatus:
    settings = PlatformSettings()
    db = await asyncpg.connect(settings.database_url)
    try:
        conn: aio_pika.abc.AbstractConnection | None = await connect(settings.amqp_url)
    except Exception as exc:
        console.print(f"[yellow]broker: {exc} (queues and parking lots not read)[/]")
        conn = None
    try:
        return await ops_status.platform_status(db, conn)
    finally:
        await db.close()
        if conn is not None:
            await conn.close()


def status(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="one JSON list on stdout, a service an object: service, live, ready, queue,"
        " consumers, parked, outbox, outbox_oldest_s, handled, failed, retried, parked_total"
        " (null: not read)",
    ),
) -> None:
    """Every service: ready or not, queue depth and consumers, outbox backlog, parked, events
    handled/failed/retried."""
    found = asyncio.run(_read_status())
    if as_json:
        print(json.dumps(found.rows()))
        return
    table = Table(title="eventshop status")
    columns = ("service", "ready", "queue", "consumers", "outbox backlog", "oldest (s)",
               "parked", "handled", "failed", "retried")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right" if col not in ("service", "ready") else "left")
    for r in found.services:
        table.add_row(
            r.service,
            "[green]ready[/]" if r.ready else ("[yellow]up[/]" if r.live else "[red]down[/]"),
            _dash(r.queue),
            _dash(r.consumers),
            _dash(r.outbox),
            _dash(None if r.outbox_oldest_s is None else f"{r.outbox_oldest_s:.1f}"),
            _dash(r.parked),
            *(_dash(None if n is None else int(n)) for n in (r.handled, r.failed, r.retried)),
        )
    out.print(table)
