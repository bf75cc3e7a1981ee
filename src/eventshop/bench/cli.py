"""`eventshop bench ...`: the benchmarks' command group; each benchmark owns its command.

The commands import their benchmark only when they run, so `eventshop --help` stays quick.
"""

from __future__ import annotations

import typer

from eventshop.bench.ab_cli import bench_ab
from eventshop.bench.bus.cli import bench_bus
from eventshop.bench.eventstore_cli import bench_eventstore
from eventshop.bench.orders.cli import bench_orders

bench_app = typer.Typer(help="benchmarks on the real broker and database", no_args_is_help=True)
bench_app.command("bus")(bench_bus)
bench_app.command("orders")(bench_orders)
bench_app.command("eventstore")(bench_eventstore)
bench_app.command("ab")(bench_ab)
