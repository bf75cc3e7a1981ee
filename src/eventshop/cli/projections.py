"""`eventshop events projections | rebuild | check`: the orders read models against the log.

Registered on `events_app` (eventshop.cli.events), whose --schema option and store access they
share.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from eventshop.cli.events import console, events_app, run_on_store
from eventshop.ops.events import projection_positions
from eventshop.platform.eventstore.rebuild import RebuildInProgressError, rebuild


@events_app.command("projections")
def list_projections(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="one JSON object on stdout: head (the log's last position), projections (each:"
        " projection, position, behind; null: not set up)",
    ),
) -> None:
    """Every projection's position in the global log, and how far behind the head it is."""
    found = run_on_store(projection_positions)
    if as_json:
        print(json.dumps(found.to_json()))
        return
    table = Table(title=f"projections (head {found.head})")
    table.add_column("projection")
    table.add_column("position", justify="right")
    table.add_column("behind", justify="right")
    for p in found.projections:
        table.add_row(
            p.projection,
            "-" if p.position is None else str(p.position),
            "not set up" if p.behind is None else str(p.behind),
        )
    console.print(table)


@events_app.command("rebuild")
def rebuild_projection(
    projection: str = typer.Argument(..., help="orders_by_user or sales_per_sku"),
    verify_only: bool = typer.Option(
        False, "--verify-only", help="build beside the live one and compare, don't swap"
    ),
    batch: int = typer.Option(5_000, min=1, help="events per transaction"),
    yes: bool = typer.Option(False, "--yes", "-y", help="swap without asking first"),
) -> None:
    """Rebuild a projection from position zero while the platform runs, then swap it in
    (after a confirmation, unless --yes; --verify-only never swaps).

    The new tables are built beside the live ones, compared with them at one position, and
    swapped in in one short transaction; differences are reported (0: the live one was right).
    """
    from eventshop.services.orders.projections import projection_named
    from eventshop.services.orders.store import events as store

    try:
        target = projection_named(projection)
    except LookupError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if not (verify_only or yes):
        typer.confirm(
            f"Rebuild {projection} and swap it in for the live tables the API reads?",
            abort=True,
            err=True,
        )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"rebuild {projection}", total=None, rate="")
        started = time.perf_counter()

        def progress(position: int, head: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-6)
            bar.update(
                task, completed=position, total=head, rate=f"{position / elapsed:,.0f} pos/s"
            )

        async def work(pool: asyncpg.Pool) -> Any:
            return await rebuild(
                pool, store, target, batch=batch, swap=not verify_only, progress=progress
            )

        try:
            report = run_on_store(work)
        except RebuildInProgressError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    verdict = (
        "[green]identical to the live one[/]"
        if report.differences == 0
        else f"[yellow]{report.differences} rows differed from the live one[/]"
    )
    console.print(
        f"{projection}: {report.events:,} events in {report.seconds:.2f} s"
        f" ({report.rate:,.0f} events/s) up to position {report.position};"
        f" {'swapped in' if report.swapped else 'verified, not swapped'}; {verdict}"
    )
    print(
        json.dumps(
            {
                "projection": projection,
                "events": report.events,
                "position": report.position,
                "seconds": round(report.seconds, 3),
                "events_per_s": round(report.rate),
                "differences": report.differences,
                "swapped": report.swapped,
            }
        )
    )
    raise typer.Exit(0 if report.differences == 0 or report.swapped else 1)


@events_app.command("check")
def check(
    order_ids: list[str] = typer.Argument(None, help="these orders (default: every order)"),
) -> None:
    """Replay orders from their streams and compare each with its read model (`orders`)."""
    from eventshop.services.orders.store import read_model_differences

    async def work(pool: asyncpg.Pool) -> tuple[int, dict[str, list[str]]]:
        async with pool.acquire() as conn:
            count = (
                len(order_ids) if order_ids else await conn.fetchval("SELECT count(*) FROM orders")
            )
            return count, await read_model_differences(conn, order_ids or None)

    count, differences = run_on_store(work)
    for order_id, what in sorted(differences.items()):
        console.print(f"[red]{order_id}[/]: " + "; ".join(what))
    console.print(
        f"{count} orders replayed: "
        + (
            "[green]every read model matches its stream[/]"
            if not differences
            else f"[red]{len(differences)} differ[/]"
        )
    )
    print(json.dumps({"orders": count, "differing": sorted(differences)}))
    raise typer.Exit(0 if not differences else 1)
