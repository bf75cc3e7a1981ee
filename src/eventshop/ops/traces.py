"""A trace's spans, as `eventshop trace` lays them out: read from the span files the services
write when no OTLP endpoint is configured (`<EVENTSHOP_TRACE_DIR>/<service>.jsonl`, see
eventshop.platform.observability.tracing), as rows of a waterfall in causal order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventshop.ops.jsonable import iso_utc
from eventshop.platform.observability.tracing import A_CORRELATION_ID, TracingSettings


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

    def to_json(self) -> dict[str, Any]:
        """What `eventshop trace --json` prints for the span."""
        start_ns = self.span.get("start_ns")
        return {
            "trace_id": self.trace_id,
            "span_id": self.span.get("span_id"),
            "parent_span_id": self.span.get("parent_span_id"),
            "depth": self.depth,
            "service": self.service,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "started_at": (
                iso_utc(datetime.fromtimestamp(start_ns / 1e9, UTC))
                if isinstance(start_ns, int)
                else None
            ),
            "start_ms": round(self.start_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "attributes": self.span.get("attributes") or {},
        }


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


def trace_rows(key: str, directory: Path | None = None) -> list[Row]:
    """The waterfall of the trace(s) `key` names (a trace id or a correlation id), read from
    `directory` (default: EVENTSHOP_TRACE_DIR); empty when no span carries it."""
    return waterfall(load_spans(directory or TracingSettings().directory(), key))
