"""Operator commands on the event store of an event-sourced service (orders).

    eventshop events stream STREAM_ID [--from-version N] [--to-version N] [--json]
    eventshop events tail [--last N | --from-position P] [--type T ...] [--follow] [--json]
    eventshop events history ORDER_ID [--version N | --at TIME] [--json]   an order's timeline
    eventshop events projections [--json]                           positions and lag
    eventshop events rebuild PROJECTION [--verify-only] [--batch N]  with a progress bar
    eventshop events check [ORDER_ID ...]                 replay = read model, for every order

They read the service's schema in PostgreSQL directly (EVENTSHOP_DATABASE_URL), as an operator
would, through the service's own store (so old schema versions are shown upcast). A rebuild
runs here, beside the running platform: the live projection keeps serving until the swap.
Tables go to stderr; `--json` writes one JSON document to stdout (`tail --follow --json`, which
never ends, one event object per line), nothing else. What they read is eventshop.ops.events
(the console reads through it too). `projections`, `rebuild` and `check` live in
eventshop.cli.projections.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from eventshop.ops import events as ops_events
from eventshop.ops.events import event_json
from eventshop.platform.eventstore import RecordedEvent
from eventshop.platform.settings import PlatformSettings

console = Console(stderr=True)
events_app = typer.Typer(
    help="the event store: streams, the global log, order timelines, projections",
    no_args_is_help=True,
)
T = TypeVar("T")
#: the schema of the event-sourced service (orders); --schema changes it
where = {"schema": "orders"}


@events_app.callback()
def _options(
    schema: str = typer.Option("orders", help="the event-sourced service's schema"),
) -> None:
    where["schema"] = schema


@asynccontextmanager
async def _pool() -> AsyncIterator[asyncpg.Pool]:
    pool = await ops_events.open_store(PlatformSettings().database_url, where["schema"])
    try:
        yield pool
    finally:
        await pool.close()


def run_on_store(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _pool() as pool:
            return await work(pool)

    try:
        return asyncio.run(main())
    except asyncpg.UndefinedTableError as exc:
        console.print(
            f"[red]schema {where['schema']!r} has no event store of this version ({exc}):"
            " the service migrates its schema when it starts; start it once, then try again[/]"
        )
        raise typer.Exit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(f"[red]database: {exc}[/]")
        raise typer.Exit(2) from None


def _brief(payload: dict[str, Any], width: int = 70) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _events_table(title: str, events: list[RecordedEvent]) -> Table:
    """One stream's events (its id is the title)."""
    table = Table(title=title)
    table.add_column("position", justify="right")
    table.add_column("v", justify="right")
    table.add_column("type", no_wrap=True)
    table.add_column("schema", justify="right", no_wrap=True)
    table.add_column("recorded at", no_wrap=True)
    table.add_column("data", overflow="ellipsis")
    for e in events:
        schema = str(e.schema_version)
        if e.was_upcast:
            schema = f"{e.stored_schema_version}→{e.schema_version}"
        table.add_row(
            str(e.global_position),
            str(e.version),
            e.event_type,
            schema,
            f"{e.recorded_at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
            _brief(e.payload),
        )
    return table


EVENT_FIELDS = (
    "global_position, stream_id, version, event_type, schema_version, stored_schema_version"
    " (null: stored as the current one), recorded_at (ISO 8601 UTC), payload, metadata"
)


@events_app.command("stream")
def stream(
    stream_id: str = typer.Argument(..., help="e.g. order-<order id>"),
    from_version: int = typer.Option(0, help="show the events after this version"),
    to_version: int | None = typer.Option(None, help="up to this version"),
    as_json: bool = typer.Option(
        False, "--json", help=f"one JSON list on stdout, an event an object: {EVENT_FIELDS}"
    ),
) -> None:
    """Show one stream's events, in version order (exit 1: none)."""

    async def work(pool: asyncpg.Pool) -> list[RecordedEvent]:
        return await ops_events.stream_events(
            pool, stream_id, from_version=from_version, to_version=to_version
        )

    found = run_on_store(work)
    if as_json:
        print(json.dumps([event_json(e) for e in found]))
    elif found:
        console.print(_events_table(stream_id, found))
    if not found:
        console.print(f"[yellow]no events in {stream_id!r} after version {from_version}[/]")
        raise typer.Exit(1)


@events_app.command("tail")
def tail(
    last: int = typer.Option(20, help="start this many events before the head"),
    from_position: int | None = typer.Option(None, help="start after this global position"),
    event_type: list[str] = typer.Option([], "--type", help="only these event types"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events"),
    poll_s: float = typer.Option(0.5, help="how often to look for new events with --follow"),
    as_json: bool = typer.Option(
        False,
        "--json",
        help=f"one JSON list on stdout, an event an object: {EVENT_FIELDS};"
        " with --follow, one such object per line instead, as they come",
    ),
) -> None:
    """The global log, in order: the last events, or from a position; --follow for more."""

    def show(batch: list[RecordedEvent]) -> None:
        for e in batch:
            if as_json:
                print(json.dumps(event_json(e)), flush=True)
            else:
                console.print(
                    f"[dim]{e.global_position:>8}[/] {e.recorded_at:%H:%M:%S.%f}"[:-3]
                    + f" [cyan]{e.stream_id}[/] v{e.version} [bold]{e.event_type}[/]"
                    + f" {_brief(e.payload, 90)}",
                    highlight=False,
                )

    types = event_type or None
    whole = as_json and not follow  # one JSON document: printed once the head is reached

    async def work(pool: asyncpg.Pool) -> None:
        read = await ops_events.log_events(pool, last=last, after=from_position, event_types=types)
        collected: list[RecordedEvent] = []
        while True:
            if whole:
                collected += read.events
            else:
                show(read.events)
            if read.caught_up and not follow:
                break
            if read.caught_up:
                await asyncio.sleep(poll_s)
            read = await ops_events.log_events(pool, after=read.position, event_types=types)
        if whole:
            print(json.dumps([event_json(e) for e in collected]))

    with suppress(KeyboardInterrupt):  # ^C ends --follow
        run_on_store(work)


@events_app.command("history")
def history(
    order_id: str = typer.Argument(...),
    version: int | None = typer.Option(None, help="the order as of this version of its stream"),
    at: datetime | None = typer.Option(None, help="the order as of this time (ISO 8601)"),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="one JSON object on stdout: order_id, timeline (each event as `stream --json`"
        " shows it, with status_after, reason_after, seconds_since_placed), as_of_version,"
        " as_of_time, as_of (the order then; null: not asked, or not placed yet)",
    ),
) -> None:
    """An order's history as a timeline; with --version or --at, the order as it was then.

    Each event of its stream, when it was recorded, seconds since the order was placed, and
    the status the order was in right after it (exit 1: no such order).
    """
    if at is not None and at.tzinfo is None:
        at = at.astimezone()  # a local time, as the operator typed it

    async def work(pool: asyncpg.Pool) -> ops_events.OrderHistory | None:
        return await ops_events.order_history(pool, order_id, version=version, at=at)

    found = run_on_store(work)
    if found is None:
        console.print(f"[yellow]no order {order_id}[/]")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(found.to_json()))
        return
    table = Table(title=f"order {order_id}")
    for column in ("v", "at", "+s", "event", "status after", "data"):
        table.add_column(column, justify="right" if column in ("v", "+s") else "left")
    for step in found.steps:
        r = step.event
        marker = "" if not r.was_upcast else f" (stored v{r.stored_schema_version})"
        table.add_row(
            str(r.version),
            r.recorded_at.isoformat(timespec="milliseconds"),
            f"{step.seconds:.3f}",
            r.event_type + marker,
            step.status + (f" ({step.reason})" if step.reason else ""),
            _brief(r.payload, 60),
        )
    console.print(table)
    if version is not None or at is not None:
        then = found.as_of
        when = f"version {version}" if version is not None else f"{at}"
        if then is None:
            console.print(f"as of {when}: [yellow]not placed yet[/]")
        else:
            console.print(
                f"as of {when}: [bold]{then.status.value}[/]"
                + (f" ({then.reason})" if then.reason else "")
                + f", version {then.version}, total {then.total_minor} {then.currency}"
            )
