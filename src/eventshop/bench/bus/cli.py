"""`eventshop bench bus`: the command and its options."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from eventshop.bench.output import emit


def bench_bus(
    events: int = typer.Option(20_000, help="events through outbox, relay, broker and inbox"),
    raw_messages: int | None = typer.Option(
        None, help="messages for the raw client rates (default: as many as --events)"
    ),
    raw: bool = typer.Option(True, help="measure the raw client rates too"),
    write_batch: int = typer.Option(100, help="events per writer transaction"),
    prefetch: int = typer.Option(1_000, help="the consumer's prefetch (its batch size)"),
    batch_handler: bool = typer.Option(True, help="insert a window's effects in one statement"),
    rounds: int = typer.Option(
        1, min=1, max=20, help="rounds, alternating raw and outbox first; reports the medians"
    ),
) -> None:
    """Events/s end to end through outbox and inbox, and the raw client's rates in the same run."""
    from eventshop.bench.bus.config import BenchConfig
    from eventshop.bench.bus.phases import run_bench
    from eventshop.bench.bus.report import print_report
    from eventshop.platform.settings import PlatformSettings

    console = Console(stderr=True)
    cfg = BenchConfig(
        settings=PlatformSettings(),
        events=events,
        raw_messages=raw_messages or events,
        write_batch=write_batch,
        prefetch=prefetch,
        batch_handler=batch_handler,
        raw=raw,
        rounds=rounds,
    )
    report = asyncio.run(run_bench(cfg, say=console.print))
    emit(report, print_report, console)
    raise typer.Exit(0 if report["lost"] == 0 and report["duplicate_effects"] == 0 else 1)
