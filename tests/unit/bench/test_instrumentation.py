"""The instrumentation benchmark's runner and report on made-up variants: every variant once per
round in order after a warm-up, figures of the right shape (no broker, database or server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from rich.console import Console
from typer.testing import CliRunner

from eventshop.bench.instrumentation import CountingExporter, Group, Run, Variant, measure
from eventshop.bench.instrumentation.__main__ import bench_instrumentation, print_report


def _variant(name: str, order: list[str], tracer: Any, baseline: str | None) -> Variant:
    @contextlib.asynccontextmanager
    async def prepare(n: int) -> AsyncIterator[Run]:
        async def run() -> None:
            order.append(name)
            for _ in range(n):
                if tracer is not None:
                    tracer.start_span(name).end()
                await asyncio.sleep(0)

        yield run

    return Variant(name, prepare, baseline, about=name)


def test_each_variant_runs_once_a_round_in_order_and_reports_medians_ranges_and_spans(
    tmp_path: Path,
) -> None:
    exporter = CountingExporter(tmp_path / "spans.jsonl")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    order: list[str] = []
    group = Group("lib", operations=3)
    group.variants += [
        _variant("none", order, None, None),
        _variant("ours", order, tracer, "none"),
    ]
    group.missing["opentelemetry-instrumentation-lib"] = "ModuleNotFoundError: lib"

    figures = asyncio.run(
        measure(
            [group],
            rounds=2,
            flush=provider.force_flush,
            exported=lambda: exporter.exported,
        )
    )

    assert order == ["none", "ours"] * 3  # the warm-up, then A B A B
    lib = figures["lib"]
    assert lib["operations"] == 3
    assert lib["missing"] == {"opentelemetry-instrumentation-lib": "ModuleNotFoundError: lib"}
    none, ours = lib["variants"]["none"], lib["variants"]["ours"]
    assert (none["rounds"], ours["rounds"]) == (2, 2)
    assert (none["spans_per_op"], ours["spans_per_op"]) == (0.0, 1.0)
    assert "overhead_us" not in none
    assert ours["baseline"] == "none"
    for stats in (none["cpu_us"], ours["cpu_us"], ours["overhead_us"]):
        assert set(stats) == {"median", "min", "max"}
        assert stats["min"] <= stats["median"] <= stats["max"]
    assert len((tmp_path / "spans.jsonl").read_text().splitlines()) == 3 * 3  # warm-up + rounds

    console = Console(file=None, record=True, width=200)
    print_report({"rounds": 2, "groups": figures}, console)
    text = console.export_text()
    assert "ours" in text
    assert "not measured" in text
    json.dumps(figures)


def test_the_command_refuses_an_unknown_group() -> None:
    import typer

    app = typer.Typer()
    app.command()(bench_instrumentation)
    result = CliRunner().invoke(app, ["--only", "sql,mongo"])
    assert result.exit_code == 2
    assert "mongo" in result.output
