"""The `eventshop` command."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.table import Table

from eventshop.platform.settings import PlatformSettings

app = typer.Typer(help="eventshop: an event-driven e-commerce back end", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def selfcheck(pings: int = typer.Option(200, help="how many events to send")) -> None:
    """Send events through the real broker and database; show what happened to them."""
    from eventshop.cli.selfcheck import run_selfcheck

    report = asyncio.run(run_selfcheck(PlatformSettings(), pings, say=console.print))
    table = Table(title="bus self-check")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in vars(report).items():
        table.add_row(
            name.replace("_", " "), f"{value:.2f}" if isinstance(value, float) else str(value)
        )
    console.print(table)
    print(json.dumps({**vars(report), "ok": report.ok}))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def run(
    service: str = typer.Argument(
        ..., help="a service name, or module:attribute of a ServiceDefinition"
    ),
    port: int | None = typer.Option(None, help="HTTP port (default: the service's own)"),
) -> None:
    """Run one service process: HTTP app, consumer, outbox relay; SIGTERM stops it gracefully."""
    from eventshop.platform.runtime import run as run_service

    run_service(service, port=port)


@app.command()
def up(wait: bool = typer.Option(True, help="wait until every service is ready")) -> None:
    """Start the whole platform, every service a supervised process; wait until all are ready."""
    from eventshop.cli import supervise
    from eventshop.services import PORTS

    layout = supervise.Layout(supervise.project_root())
    try:
        supervise.start(layout, say=console.print)
    except supervise.PlatformConflictError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if not wait:
        return
    state = asyncio.run(supervise.wait_ready())
    table = Table(title="eventshop")
    table.add_column("service")
    table.add_column("ready")
    table.add_column("port", justify="right")
    for name, ok in state.items():
        table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]", str(PORTS[name]))
    console.print(table)
    if not all(state.values()):
        console.print(f"[red]not ready; logs in {layout.logs}[/]")
        raise typer.Exit(1)
    console.print(f"API   http://127.0.0.1:{PORTS['gateway']}/api/v1")
    console.print(f"docs  http://127.0.0.1:{PORTS['gateway']}/docs")
    console.print(f"logs  {layout.logs}")


@app.command()
def down() -> None:
    """Stop every service of the platform."""
    from eventshop.cli import supervise

    stopped = supervise.stop(supervise.Layout(supervise.project_root()))
    console.print("stopped" if stopped else "the platform was not running")


@app.command()
def demo(
    orders: int = typer.Option(300, help="how many orders to place"),
    concurrency: int = typer.Option(16, help="orders in flight at once"),
) -> None:
    """The shopping demo: start the platform, fill the shop, place orders, check the invariants."""
    from eventshop.cli.demo import run_demo

    up(wait=True)
    result = asyncio.run(run_demo(orders, concurrency, PlatformSettings().database_url, console))
    table = Table(title="shopping demo")
    table.add_column("outcome")
    table.add_column("orders", justify="right")
    table.add_row("CONFIRMED", str(result["confirmed"]))
    for reason, n in sorted(result["cancelled"].items()):
        table.add_row(f"CANCELLED ({reason})", str(n))
    for key in ("events_published", "notifications_sent", "points_awarded", "parked"):
        table.add_row(key.replace("_", " "), str(result[key]))
    table.add_row("invariants", "[green]hold[/]" if result["invariants_ok"] else "[red]VIOLATED[/]")
    console.print(table)
    for v in result["violations"]:
        console.print(f"[red]{v}[/]")
    console.print(
        "the platform is still running: http://127.0.0.1:8000/docs ; stop it with `eventshop down`"
    )
    print(json.dumps(result))
    raise typer.Exit(0 if result["invariants_ok"] and result["final"] == result["orders"] else 1)


from eventshop.cli.operate import dlq as _dlq  # noqa: E402
from eventshop.cli.operate import status as _status  # noqa: E402

app.add_typer(_dlq, name="dlq")
app.command("status")(_status)

from eventshop.cli.trace import trace as _trace  # noqa: E402

app.command("trace")(_trace)

from eventshop.cli.events import events_app  # noqa: E402

app.add_typer(events_app, name="events")


@app.command()
def asyncapi(output: str = typer.Option("-", help="file to write, - for stdout")) -> None:
    """Write the AsyncAPI document generated from the contracts and the service definitions."""
    from eventshop.asyncapi import build_asyncapi

    text = json.dumps(build_asyncapi(), indent=2)
    if output == "-":
        print(text)
    else:
        with open(output, "w") as f:
            f.write(text + "\n")
        console.print(f"wrote {output}")


bench_app = typer.Typer(help="benchmarks on the real broker and database", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("bus")
def bench_bus(
    events: int = typer.Option(20_000, help="events through outbox, relay, broker and inbox"),
    raw_messages: int | None = typer.Option(
        None, help="messages for the raw client rates (default: as many as --events)"
    ),
    raw: bool = typer.Option(True, help="measure the raw client rates too"),
    write_batch: int = typer.Option(100, help="events per writer transaction"),
    prefetch: int = typer.Option(1_000, help="the consumer's prefetch (its batch size)"),
    batch_handler: bool = typer.Option(True, help="insert a window's effects in one statement"),
) -> None:
    """Events/s end to end through outbox and inbox, and the raw client's rates in the same run."""
    from eventshop.bench.bus import BenchConfig, print_report, run_bench

    cfg = BenchConfig(
        settings=PlatformSettings(),
        events=events,
        raw_messages=raw_messages or events,
        write_batch=write_batch,
        prefetch=prefetch,
        batch_handler=batch_handler,
        raw=raw,
    )
    report = asyncio.run(run_bench(cfg, say=console.print))
    print_report(report, console)
    print(json.dumps(report))
    raise typer.Exit(0 if report["lost"] == 0 and report["duplicate_effects"] == 0 else 1)


@bench_app.command("orders")
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
) -> None:
    """Orders/s through the whole saga over HTTP, latencies, messages, commits and CPU per order."""
    from eventshop.bench.orders import BenchError, OrdersBenchConfig, print_report
    from eventshop.bench.orders import run as run_orders

    if arrivals not in ("poisson", "even"):
        raise typer.BadParameter("poisson or even", param_hint="--arrivals")
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
    )
    try:
        report = run_orders(cfg, console)
    except BenchError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    print_report(report, console)
    print(json.dumps(report))
    ok = report["invariants_ok"] and report["not_final"] == 0 and report["place_failed"] == 0
    raise typer.Exit(0 if ok else 1)


@bench_app.command("eventstore")
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
    print_report(report, console)
    print(json.dumps(report))


if __name__ == "__main__":
    app()
