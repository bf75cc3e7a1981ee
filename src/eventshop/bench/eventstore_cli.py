"""`eventshop bench eventstore`: the command and its options (the benchmark: `eventstore`)."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from eventshop.bench.output import emit


def bench_eventstore(
    rounds: int = typer.Option(3, min=1, help="repetitions of each figure (medians reported)"),
    appends: int = typer.Option(2_000, min=1, help="appends per round and concurrency"),
    concurrency: str = typer.Option("1,4,16", help="concurrent writers, comma separated"),
    loads: int = typer.Option(200, min=1, help="stream loads per round"),
    orders: int = typer.Option(20_000, min=1, help="orders in the log for the rebuild"),
    rebuild_batch: int = typer.Option(5_000, min=1, help="events per rebuild transaction"),
) -> None:
    """Appends/s, stream load times with and without snapshots, projection rebuild events/s."""
    from eventshop.bench.eventstore import BenchConfig, print_report, run_bench
    from eventshop.platform.settings import PlatformSettings

    console = Console(stderr=True)
    cfg = BenchConfig(
        settings=PlatformSettings(),
        rounds=rounds,
        appends=appends,
        concurrency=tuple(int(c) for c in concurrency.split(",")),
        loads=loads,
        orders=orders,
        rebuild_batch=rebuild_batch,
    )
    report = asyncio.run(run_bench(cfg, say=console.print))
    emit(report, print_report, console)
