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
        table.add_row(name.replace("_", " "), f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    print(json.dumps({**vars(report), "ok": report.ok}))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def run(
    service: str = typer.Argument(..., help="a service name, or module:attribute of a ServiceDefinition"),
    port: int | None = typer.Option(None, help="HTTP port (default: the service's own)"),
) -> None:
    """Run one service process: HTTP app, consumer, outbox relay; SIGTERM stops it gracefully."""
    from eventshop.platform.runtime import run as run_service

    run_service(service, port=port)


@app.command()
def demo() -> None:
    """The main job. For now the bus self-check; the shop's demo takes its place."""
    selfcheck(200)


if __name__ == "__main__":
    app()
