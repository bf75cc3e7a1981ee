"""`python -m eventshop.bench.instrumentation`: the command (the benchmark: `__init__.py`).

Run it from an environment where the official instrumentations are installed to measure them
(ADR 0010 says how); in the project's own they are reported missing and only our spans and
the baselines are measured. The last line of stdout is the report as one JSON object.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from eventshop.bench.instrumentation import CountingExporter, Group, measure
from eventshop.bench.output import emit

GROUPS = ("sql", "amqp", "http", "redis")
PACKAGES = (
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-asyncpg",
    "opentelemetry-instrumentation-aio-pika",
    "opentelemetry-instrumentation-aiohttp-client",
    "opentelemetry-instrumentation-redis",
)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


async def run_bench(
    *,
    only: tuple[str, ...],
    rounds: int,
    sizes: Mapping[str, int],
    database_url: str,
    amqp_url: str,
    redis_url: str,
    trace_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from eventshop.bench.instrumentation.amqp import amqp_group
    from eventshop.bench.instrumentation.http import HttpServer, http_group, redis_group
    from eventshop.bench.instrumentation.sql import sql_group
    from eventshop.platform.observability.tracing import TracingSettings, setup_tracing

    exporter = CountingExporter(trace_dir / "bench-instrumentation.jsonl")
    provider = setup_tracing(
        "bench-instrumentation", TracingSettings(enabled=True, sample_ratio=1.0), exporter=exporter
    )
    assert provider is not None
    groups: list[Group] = []
    closers: list[Callable[[], Awaitable[Any]]] = []
    with HttpServer() as url:
        try:
            if "sql" in only:
                group, close = await sql_group(database_url, provider, sizes["sql"])
                groups.append(group)
                closers.append(close)
            if "amqp" in only:
                amqp = await amqp_group(amqp_url, provider, sizes["amqp"], uuid.uuid4().hex[:8])
                groups.append(amqp[0])
                closers.append(amqp[1].close)
            if "http" in only:
                groups.append(http_group(url, provider, sizes["http"]))
            if "redis" in only:
                group, close = await redis_group(redis_url, provider, sizes["redis"])
                groups.append(group)
                closers.append(close)
            figures = await measure(
                groups,
                rounds=rounds,
                flush=provider.force_flush,
                exported=lambda: exporter.exported,
                say=say,
            )
        finally:
            for close in closers:
                await close()
            provider.shutdown()
    return {
        "benchmark": "instrumentation",
        "rounds": rounds,
        "measure": "time.process_time of this process per operation, export included",
        "exporter": "the project's JSON lines (JsonLinesSpanExporter), batch span processor",
        "versions": versions(),
        "groups": figures,
    }


def print_report(report: Mapping[str, Any], console: Console) -> None:
    table = Table(title=f"CPU µs per operation, {report['rounds']} rounds (median \\[min-max])")
    for column in ("group", "variant", "cpu µs", "overhead µs", "spans/op"):
        table.add_column(column)
    for group, figures in report["groups"].items():
        for name, v in figures["variants"].items():
            over = v.get("overhead_us")
            table.add_row(
                group,
                name,
                _cell(v["cpu_us"]),
                _cell(over) if over else "-",
                str(v["spans_per_op"]),
            )
        for package, why in figures["missing"].items():
            table.add_row(group, f"({package})", "not measured", why[:60], "")
    console.print(table)


def _cell(stats: Mapping[str, float | None]) -> str:
    return f"{stats['median']} [{stats['min']}-{stats['max']}]"


def bench_instrumentation(
    rounds: int = typer.Option(5, min=1, help="rounds of every variant (A B C A B C ...)"),
    only: str = typer.Option(",".join(GROUPS), help="groups to measure, comma separated"),
    sql: int = typer.Option(2_000, min=1, help="statements per variant and round"),
    amqp: int = typer.Option(2_000, min=1, help="messages per variant and round"),
    http: int = typer.Option(1_000, min=1, help="calls per variant and round"),
    redis: int = typer.Option(2_000, min=1, help="commands per variant and round"),
    amqp_url: str = typer.Option("amqp://guest:guest@127.0.0.1:5672/", help="a vhost to use"),
    database_url: str = typer.Option("postgresql://root@127.0.0.1:5432/eventshop"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
    uvloop: bool = typer.Option(True, help="run on uvloop, as the services do"),
) -> None:
    """CPU per operation of our spans, the official instrumentations and no span at all."""
    import asyncio

    console = Console(stderr=True, width=120)
    chosen = tuple(g.strip() for g in only.split(",") if g.strip())
    unknown = set(chosen) - set(GROUPS)
    if unknown:
        raise typer.BadParameter(f"unknown groups: {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        coro = run_bench(
            only=chosen,
            rounds=rounds,
            sizes={"sql": sql, "amqp": amqp, "http": http, "redis": redis},
            database_url=database_url,
            amqp_url=amqp_url,
            redis_url=redis_url,
            trace_dir=Path(tmp),
            say=console.print,
        )
        if uvloop:
            import uvloop as uv

            report = uv.run(coro)
        else:
            report = asyncio.run(coro)
    emit(report, print_report, console)


if __name__ == "__main__":
    typer.run(bench_instrumentation)
