"""`eventshop bench orders`: the command and its options."""

from __future__ import annotations

import typer
from rich.console import Console

from eventshop.bench.output import emit


def bench_orders(
    orders: int = typer.Option(2_000, help="orders to place (in each run)"),
    concurrency: int = typer.Option(16, help="closed loop: orders being placed at once"),
    rate: float | None = typer.Option(
        None, help="open loop instead: orders/s offered, whatever the platform does"
    ),
    half_rate: bool = typer.Option(
        False, "--half-rate", help="then an open-loop run at half the final-state rate reached"
    ),
    arrivals: str = typer.Option("poisson", help="open loop: poisson or even arrivals"),
    products: int = typer.Option(500, help="the catalogue the orders pick from"),
    users: int = typer.Option(50, help="shoppers placing the orders (each logged in)"),
    max_lines: int = typer.Option(3, help="lines per order: 1 to this many"),
    configure: bool = typer.Option(
        True,
        "--configure/--as-is",
        help="apply the benchmark profile to a running platform (restarts what changed)",
    ),
    keep_running: bool = typer.Option(False, help="leave the platform running at the end"),
    seed: int | None = typer.Option(None, help="seed of the orders' contents and arrivals"),
    replicas: str | None = typer.Option(
        None, help="processes per service, as `eventshop up --replicas` (e.g. inventory=2)"
    ),
) -> None:
    """Orders/s through the whole saga over HTTP, latencies, messages, commits and CPU per order."""
    from eventshop.bench.orders.config import BenchError, OrdersBenchConfig
    from eventshop.bench.orders.runner import run
    from eventshop.bench.orders.tables import print_report
    from eventshop.tooling.supervise import ReplicasError, parse_replicas

    try:
        counts = parse_replicas(replicas) if replicas is not None else {}
    except ReplicasError as exc:
        raise typer.BadParameter(str(exc), param_hint="--replicas") from None
    if arrivals not in ("poisson", "even"):
        raise typer.BadParameter("poisson or even", param_hint="--arrivals")
    console = Console(stderr=True)
    cfg = OrdersBenchConfig(
        orders=orders,
        concurrency=concurrency,
        rate=rate,
        arrivals="even" if arrivals == "even" else "poisson",
        half_rate=half_rate,
        products=products,
        users=users,
        max_lines=max_lines,
        configure=configure,
        keep_running=keep_running,
        seed=seed,
        replicas=counts,
    )
    try:
        report = run(cfg, console)
    except BenchError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    emit(report, print_report, console)
    ok = report["invariants_ok"] and report["not_final"] == 0 and report["place_failed"] == 0
    raise typer.Exit(0 if ok else 1)
