"""`eventshop trace <correlation id | trace id>`: a trace as a waterfall in the terminal.

    eventshop trace 5f0c...            # a correlation id (X-Correlation-ID of the request)
    eventshop trace 4bf92f3577b34da6a3ce929d0e0e4736 --json

It reads the span files the services write when no OTLP endpoint is configured
(`<EVENTSHOP_TRACE_DIR>/<service>.jsonl`, default ./var/traces; see
eventshop.platform.observability.tracing) and prints every span of the trace(s) the id names,
as a tree in causal order: service, span, start (ms after the trace's first span), duration
and a bar on a common time axis. With a collector configured, its UI shows the same traces.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventshop.platform.observability.tracing import A_CORRELATION_ID, TracingSettings

BAR_WIDTH = 40


@dataclass(frozen=True)
class Row:
    """One span in the waterfall: its depth in the tree and its times relative to the trace."""

    trace_id: str
    depth: int
    service: str
    name: str
    kind: str
    status: str
    start_ms: float
    duration_ms: float
    span: dict[str, Any]


def _lines(directory: Path) -> Iterator[str]:
    for path in sorted(directory.glob("*.jsonl*")):
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                yield from f
        except OSError:
            continue


def _parse(line: str) -> dict[str, Any] | None:
    try:
        span = json.loads(line)
    except ValueError:
        return None  # a line torn by a crash mid-write
    return span if isinstance(span, dict) and "trace_id" in span else None


def load_spans(directory: Path, key: str) -> list[dict[str, Any]]:
    """Every span of the traces that `key` names: a trace id, or a correlation id some span
    of the trace carries."""
    key = key.strip()
    trace_ids: set[str] = set()
    for line in _lines(directory):
        if key not in line:
            continue
        span = _parse(line)
        if span is None:
            continue
        attributes = span.get("attributes") or {}
        if span["trace_id"] == key.lower() or attributes.get(A_CORRELATION_ID) == key:
            trace_ids.add(span["trace_id"])
    if not trace_ids:
        return []
    spans: dict[tuple[str, str], dict[str, Any]] = {}
    for line in _lines(directory):
        if not any(t in line for t in trace_ids):
            continue
        span = _parse(line)
        if span is not None and span["trace_id"] in trace_ids:
            spans[(span["trace_id"], span["span_id"])] = span
    return list(spans.values())


def waterfall(spans: list[dict[str, Any]]) -> list[Row]:
    """The spans as rows: each trace's tree depth first, children in the order they started."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    rows: list[Row] = []
    for trace_id, members in sorted(
        by_trace.items(), key=lambda kv: min(s["start_ns"] for s in kv[1])
    ):
        ids = {s["span_id"] for s in members}
        children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for s in members:
            parent = s.get("parent_span_id")
            children[parent if parent in ids else None].append(s)
        for group in children.values():
            group.sort(key=lambda s: (s["start_ns"], s["end_ns"]))
        origin = min(s["start_ns"] for s in members)
        _walk(rows, trace_id, children, origin, None, 0)
    return rows


def _walk(
    rows: list[Row],
    trace_id: str,
    children: dict[str | None, list[dict[str, Any]]],
    origin: int,
    parent: str | None,
    depth: int,
) -> None:
    for s in children.get(parent, []):
        rows.append(
            Row(
                trace_id=trace_id,
                depth=depth,
                service=str(s.get("service", "")),
                name=str(s.get("name", "")),
                kind=str(s.get("kind", "")),
                status=str(s.get("status", "")),
                start_ms=(s["start_ns"] - origin) / 1e6,
                duration_ms=(s["end_ns"] - s["start_ns"]) / 1e6,
                span=s,
            )
        )
        _walk(rows, trace_id, children, origin, s["span_id"], depth + 1)


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
    as_json: bool = typer.Option(False, "--json", help="one JSON object per span, in order"),
    directory: Path | None = typer.Option(
        None, "--dir", help="where the span files are (default: EVENTSHOP_TRACE_DIR)"
    ),
) -> None:
    """Print a trace as a waterfall: service, span, start, duration."""
    where = directory or TracingSettings().directory()
    rows = waterfall(load_spans(where, key))
    if not rows:
        Console(stderr=True).print(f"[red]no spans for {key} in {where}[/]")
        raise typer.Exit(1)
    if as_json:
        for r in rows:
            print(
                json.dumps(
                    {
                        "trace_id": r.trace_id,
                        "depth": r.depth,
                        "service": r.service,
                        "name": r.name,
                        "kind": r.kind,
                        "status": r.status,
                        "start_ms": round(r.start_ms, 3),
                        "duration_ms": round(r.duration_ms, 3),
                        "span_id": r.span["span_id"],
                        "parent_span_id": r.span.get("parent_span_id"),
                    }
                )
            )
        return
    out = Console()
    for table in render(rows, out.width):
        out.print(table)
