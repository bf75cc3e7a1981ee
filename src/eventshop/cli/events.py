"""Operator commands on the event store of an event-sourced service (orders).

    eventshop events stream STREAM_ID [--from-version N] [--to-version N] [--json]
    eventshop events tail [--last N | --from-position P] [--type T ...] [--follow] [--json]
    eventshop events history ORDER_ID [--version N | --at TIME]     an order's timeline
    eventshop events projections                                    positions and lag
    eventshop events rebuild PROJECTION [--verify-only] [--batch N]  with a progress bar
    eventshop events check [ORDER_ID ...]                 replay = read model, for every order

They read the service's schema in PostgreSQL directly (EVENTSHOP_DATABASE_URL), as an operator
would, through the service's own store (so old schema versions are shown upcast). A rebuild
runs here, beside the running platform: the live projection keeps serving until the swap.
Tables go to stderr; `--json` writes one JSON object per line to stdout. `projections`,
`rebuild` and `check` live in eventshop.cli.projections.
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

from eventshop.platform.db import create_pool
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
    pool = await create_pool(
        PlatformSettings().database_url, where["schema"], min_size=1, max_size=3
    )
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


def _as_json(e: RecordedEvent) -> dict[str, Any]:
    return {
        "global_position": e.global_position,
        "stream_id": e.stream_id,
        "version": e.version,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "stored_schema_version": e.stored_schema_version,
        "recorded_at": e.recorded_at.isoformat(),
        "payload": e.payload,
        "metadata": e.metadata,
    }


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


@events_app.command("stream")
def stream(
    stream_id: str = typer.Argument(..., help="e.g. order-<order id>"),
    from_version: int = typer.Option(0, help="show the events after this version"),
    to_version: int | None = typer.Option(None, help="up to this version"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per event on stdout"),
) -> None:
    """Show one stream's events, in version order."""
    from eventshop.services.orders.store import events as store

    async def work(pool: asyncpg.Pool) -> list[RecordedEvent]:
        async with pool.acquire() as conn:
            return await store.load(conn, stream_id, from_version, to_version=to_version)

    found = run_on_store(work)
    if as_json:
        for e in found:
            print(json.dumps(_as_json(e)))
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
    as_json: bool = typer.Option(False, "--json", help="one JSON object per event on stdout"),
) -> None:
    """The global log, in order: the last events, or from a position; --follow for more."""
    from eventshop.services.orders.store import events as store

    types = event_type or None

    def show(batch: list[RecordedEvent]) -> None:
        for e in batch:
            if as_json:
                print(json.dumps(_as_json(e)), flush=True)
            else:
                console.print(
                    f"[dim]{e.global_position:>8}[/] {e.recorded_at:%H:%M:%S.%f}"[:-3]
                    + f" [cyan]{e.stream_id}[/] v{e.version} [bold]{e.event_type}[/]"
                    + f" {_brief(e.payload, 90)}",
                    highlight=False,
                )

    async def work(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            position = from_position
            if position is None:
                position = max(0, await store.head(conn) - last)
            while True:
                page = await store.read_all(conn, position, limit=500, event_types=types)
                show(page.events)
                position = page.position
                if page.caught_up:
                    if not follow:
                        return
                    await asyncio.sleep(poll_s)

    with suppress(KeyboardInterrupt):  # ^C ends --follow
        run_on_store(work)


@events_app.command("history")
def history(
    order_id: str = typer.Argument(...),
    version: int | None = typer.Option(None, help="the order as of this version of its stream"),
    at: datetime | None = typer.Option(None, help="the order as of this time (ISO 8601)"),
    as_json: bool = typer.Option(False, "--json", help="the timeline as JSON on stdout"),
) -> None:
    """An order's history as a timeline; with --version or --at, the order as it was then.

    Each event of its stream, when it was recorded, seconds since the order was placed, and
    the status the order was in right after it.
    """
    from eventshop.services.orders import domain, eventlog
    from eventshop.services.orders import store as orders

    if at is not None and at.tzinfo is None:
        at = at.astimezone()  # a local time, as the operator typed it

    async def work(
        pool: asyncpg.Pool,
    ) -> tuple[list[RecordedEvent], domain.Order | None]:
        async with pool.acquire() as conn:
            recorded = await orders.history_of(conn, order_id)
            then = None
            if version is not None or at is not None:
                then = await orders.order_as_of(conn, order_id, version=version, at=at)
            return recorded, then

    recorded, then = run_on_store(work)
    if not recorded:
        console.print(f"[yellow]no order {order_id}[/]")
        raise typer.Exit(1)
    steps = domain.timeline(orders.to_domain(r) for r in recorded)
    start = recorded[0].recorded_at
    if as_json:
        print(
            json.dumps(
                {
                    "order_id": order_id,
                    "timeline": [
                        {**_as_json(r), "status_after": state.status.value}
                        for r, (_, state) in zip(recorded, steps, strict=True)
                    ],
                    "as_of": None if then is None else eventlog.CODEC.encode(then),
                },
                default=str,
            )
        )
        return
    table = Table(title=f"order {order_id}")
    for column in ("v", "at", "+s", "event", "status after", "data"):
        table.add_column(column, justify="right" if column in ("v", "+s") else "left")
    for r, (_, state) in zip(recorded, steps, strict=True):
        marker = "" if not r.was_upcast else f" (stored v{r.stored_schema_version})"
        status = state.status.value + (f" ({state.reason})" if state.reason else "")
        table.add_row(
            str(r.version),
            r.recorded_at.isoformat(timespec="milliseconds"),
            f"{(r.recorded_at - start).total_seconds():.3f}",
            r.event_type + marker,
            status,
            _brief(r.payload, 60),
        )
    console.print(table)
    if version is not None or at is not None:
        when = f"version {version}" if version is not None else f"{at}"
        if then is None:
            console.print(f"as of {when}: [yellow]not placed yet[/]")
        else:
            console.print(
                f"as of {when}: [bold]{then.status.value}[/]"
                + (f" ({then.reason})" if then.reason else "")
                + f", version {then.version}, total {then.total_minor} {then.currency}"
            )
