"""`eventshop bench ab`: the command (the work is eventshop.bench.ab)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from eventshop.bench.output import emit


def bench_ab(
    a: str = typer.Argument(..., help="the version measured against (a git ref), e.g. ecb634f"),
    b: str = typer.Argument("HEAD", help="the version measured (a git ref)"),
    rounds: int = typer.Option(3, min=1, max=20, help="rounds; each runs A and B once"),
    orders: int = typer.Option(2_000, min=10, help="orders per run"),
    concurrency: int = typer.Option(32, min=1, help="closed loop: orders placed at once"),
    half_rate: bool = typer.Option(True, "--half-rate/--no-half-rate", help="then half rate"),
    seed: int = typer.Option(1, help="the same orders in every run"),
    rate: float | None = typer.Option(
        None,
        min=1,
        help="then an open-loop run at this many orders/s for both versions, instead of half"
        " of each one's own rate: their p99 to final under the same load",
    ),
) -> None:
    """Two versions' `bench orders` in one window, alternately (A B, B A, ...): the medians,
    ranges and ratios B/A of orders/s, CPU per order and p99 at half rate (or at `--rate`),
    the ratio of each round's pair, and each process's CPU per order in both."""
    import asyncio

    from eventshop.bench import ab
    from eventshop.tooling import supervise

    console = Console(stderr=True)
    root = supervise.project_root()
    say = console.print
    versions = [ab.prepare(root, a, say), ab.prepare(root, b, say)]
    asyncio.run(ab.prepare_databases(versions))
    ab.stop_platforms(root)
    bench_args = ["--orders", str(orders), "--concurrency", str(concurrency), "--seed", str(seed)]
    if half_rate and rate is None:
        bench_args.append("--half-rate")
    envs = [ab.environment(v, supervise.SERVICES) for v in versions]
    for i, (first, second) in enumerate(ab.order_of_rounds(rounds), start=1):
        say(f"round {i} of {rounds}")
        for side in (first, second):
            run = ab.run_once(versions[side], bench_args, envs[side], say)
            if rate is not None:  # the version's own `bench orders --rate`: the open loop
                rate_args = ["--orders", str(orders), "--rate", str(rate), "--seed", str(seed)]
                at_rate = ab.run_once(versions[side], rate_args, envs[side], say)
                run = ab.with_rate_run(run, at_rate, rate)
            versions[side].runs.append(run)
    emit(ab.summary(*versions), _print, console)


def _print(report: Mapping[str, Any], console: Console) -> None:
    figures = report["figures"]
    t = Table(title=f"A/B: {report['rounds']} rounds")
    for col in ("figure", "A median [range]", "B median [range]", "B/A", "B/A by round"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for row in figures.values():
        cells = [f"{row[s]['median']} [{', '.join(map(str, row[s]['range'] or []))}]" for s in "ab"]
        by_round = f"{row['round_ratio_median']} {row['round_ratios']}"
        t.add_row(row["label"], *cells, str(row["ratio_b_to_a"]), by_round)
    console.print(t)
    by_process = report.get("processes") or {}
    if by_process:
        shown = any(row["a_open_loop"] is not None for row in by_process.values())
        p = Table(title="CPU ms per order by process, medians of the runs")
        open_loop = report.get("open_loop") or "open loop"
        columns = ["process", "A", "B", "B/A"] + ([f"A {open_loop}", f"B {open_loop}"] * shown)
        for col in columns:
            p.add_column(col, justify="left" if col == "process" else "right")
        for name, row in by_process.items():
            ratio = round(row["b"] / row["a"], 2) if row["a"] and row["b"] is not None else None
            values: list[Any] = [row["a"], row["b"], ratio]
            if shown:
                values += [row["a_open_loop"], row["b_open_loop"]]
            p.add_row(name, *("-" if v is None else str(v) for v in values))
        console.print(p)
    if not report["every_run_ok"]:
        console.print("[red]a run failed or its invariants did not hold: see var/ab/*/var/log[/]")
