"""`eventshop trace <correlation id | trace id>`: a trace as a waterfall in the terminal.

    eventshop trace 5f0c...            # a correlation id (X-Correlation-ID of the request)
    eventshop trace 4bf92f3577b34da6a3ce929d0e0e4736 --json     # one JSON list of spans

It reads the span files the services write when no OTLP endpoint is configured
(`<EVENTSHOP_TRACE_DIR>/<service>.jsonl`, default ./var/traces; see
eventshop.platform.observability.tracing) and prints every span of the trace(s) the id names,
as a tree in causal order: service, span, start (ms after the trace's first span), duration
and a bar on a common time axis. With a collector configured, its UI shows the same traces.
The reading is eventshop.ops.traces (the console reads through it too); this is the rendering.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventshop.ops.traces import Row as Row
from eventshop.ops.traces import load_spans as load_spans
from eventshop.ops.traces import trace_rows
from eventshop.ops.traces import waterfall as waterfall
from eventshop.platform.observability.tracing import TracingSettings

BAR_WIDTH = 40


def _bar(row: Row, total_ms: float, width: int) -> Text:
    scale = width / total_ms if total_ms > 0 else 0.0
    offset = min(width - 1, int(row.start_ms * scale))
    length = max(1, min(width - offset, round(row.duration_ms * scale)))
    colour = "red" if row.status == "ERROR" else "cyan"
    return Text(" " * offset) + Text("█" * length, style=colour)


def render(rows: list[Row], width: int = 120) -> list[Table]:
    """A table per trace; the time bars take what the terminal's `width` leaves (none if
    it leaves too little)."""
    tables: list[Table] = []
    for trace_id in dict.fromkeys(r.trace_id for r in rows):
        members = [r for r in rows if r.trace_id == trace_id]
        total = max(r.start_ms + r.duration_ms for r in members)
        cells = [
            (
                r.service,
                "  " * r.depth + r.name,
                f"{r.start_ms:,.1f} ms",
                f"{r.duration_ms:,.1f} ms",
            )
            for r in members
        ]
        used = sum(max(len(c[i]) for c in cells) for i in range(4)) + 4 * 3 + 6
        bar = min(BAR_WIDTH, width - used)
        table = Table(title=f"trace {trace_id}: {len(members)} spans, {total:,.1f} ms")
        table.add_column("service", no_wrap=True)
        table.add_column("span", no_wrap=True)
        table.add_column("start", justify="right", no_wrap=True)
        table.add_column("duration", justify="right", no_wrap=True)
        if bar >= 10:
            table.add_column("", no_wrap=True)
        for r, row in zip(members, cells, strict=True):
            table.add_row(*row, *([_bar(r, total, bar)] if bar >= 10 else []))
        tables.append(table)
    return tables


def trace(
    key: str = typer.Argument(..., help="a correlation id or a trace id (32 hex digits)"),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="one JSON list on stdout, a span an object in waterfall order: trace_id, span_id,"
        " parent_span_id, depth, service, name, kind, status, started_at (ISO 8601 UTC),"
        " start_ms (after the trace's first span), duration_ms, attributes",
    ),
    directory: Path | None = typer.Option(
        None, "--dir", help="where the span files are (default: EVENTSHOP_TRACE_DIR)"
    ),
) -> None:
    """Print a trace as a waterfall: service, span, start, duration (exit 1: no such trace)."""
    where = directory or TracingSettings().directory()
    rows = trace_rows(key, where)
    if not rows:
        Console(stderr=True).print(f"[red]no spans for {key} in {where}[/]")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps([r.to_json() for r in rows]))
        return
    out = Console()
    for table in render(rows, out.width):
        out.print(table)
