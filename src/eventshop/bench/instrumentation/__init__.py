"""What a span costs: the platform's own spans against OpenTelemetry's official instrumentations.

`python -m eventshop.bench.instrumentation` (ADR 0010) measures the CPU time of this process
(`time.process_time`: every thread, so the batch span processor's export thread is counted)
per operation, for each variant of each library:

- sql: an asyncpg statement, plain / through `TracedConnection` / through
  opentelemetry-instrumentation-asyncpg, inside a recording span and outside any trace;
- amqp: a publish with confirms (the relay's batch path untraced / with the relay's PRODUCER
  spans; `Exchange.publish` one message at a time without / with opentelemetry-instrumentation-
  aio-pika, the only path it wraps) and a consume (no span / the consumer's `handling_span`
  / the instrumentation's);
- http: an aiohttp client call to a server in another process, no span / the gateway's CLIENT
  span / opentelemetry-instrumentation-aiohttp-client's;
- redis: a GET, no span (the platform makes none) / opentelemetry-instrumentation-redis's.

Spans go through the project's own tracer provider set-up (`setup_tracing`: the parent-based
sampler at ratio 1.0, the batch span processor) to its JSON-lines exporter in a temporary
directory, flushed inside each timed run, so the export is paid where it is caused. The
variants of a group run one after the other in every round (A B C A B C ...), so a noisy
neighbour weighs on all of them alike; each figure is the median over the rounds, with the
range, and the overhead is the median of the per-round differences from the variant's
baseline. An instrumentation that is not installed is reported as such, never guessed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from eventshop.platform.observability.trace_files import JsonLinesSpanExporter

#: runs `n` operations (what is timed)
Run = Callable[[], Awaitable[None]]
#: n -> the set-up of one timed run, yielding the run (set-up and tear-down are not timed)
Prepare = Callable[[int], AbstractAsyncContextManager[Run]]


@dataclass(frozen=True)
class Variant:
    name: str
    prepare: Prepare
    #: the variant whose figure is subtracted for the overhead (None: this is a baseline)
    baseline: str | None = None
    #: what the variant is, for the report
    about: str = ""


@dataclass
class Group:
    """Variants of one library measured with the same number of operations."""

    name: str
    operations: int
    variants: list[Variant] = field(default_factory=list)
    #: instrumentations asked for but not importable here: name -> why
    missing: dict[str, str] = field(default_factory=dict)


class CountingExporter(JsonLinesSpanExporter):
    """The project's JSON-lines exporter, counting the spans it wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        self.exported += len(spans)
        return result


async def measure(
    groups: Sequence[Group],
    *,
    rounds: int,
    flush: Callable[[], Any],
    exported: Callable[[], int],
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every variant of every group once per round, in order, after one untimed warm-up run of
    each; their figures (see `summarise`)."""
    for group in groups:  # once, untimed: imports, first spans, prepared statements
        for v in group.variants:
            async with v.prepare(min(group.operations, 50)) as run:
                await run()
    flush()
    cpu: dict[str, dict[str, list[float]]] = {g.name: {} for g in groups}
    spans: dict[str, dict[str, list[float]]] = {g.name: {} for g in groups}
    for r in range(rounds):
        for group in groups:
            n = group.operations
            for v in group.variants:
                async with v.prepare(n) as run:
                    flush()
                    before = exported()
                    started = time.process_time()
                    await run()
                    flush()
                    spent = time.process_time() - started
                    spans[group.name].setdefault(v.name, []).append((exported() - before) / n)
                cpu[group.name].setdefault(v.name, []).append(spent / n * 1e6)
        say(f"round {r + 1}/{rounds} done")
    return {
        g.name: summarise(g, cpu[g.name], spans[g.name]) | {"operations": g.operations}
        for g in groups
    }


def summarise(
    group: Group, cpu_us: Mapping[str, list[float]], spans_per_op: Mapping[str, list[float]]
) -> dict[str, Any]:
    """Per variant: CPU µs per operation (median, min, max over the rounds), the overhead over
    its baseline (median and range of the per-round differences), spans exported per operation."""
    variants: dict[str, Any] = {}
    for v in group.variants:
        runs = cpu_us.get(v.name, [])
        figures: dict[str, Any] = {
            "about": v.about,
            "rounds": len(runs),
            "cpu_us": _stats(runs),
            "spans_per_op": round(statistics.median(spans_per_op[v.name]), 3) if runs else None,
        }
        if v.baseline is not None:
            base = cpu_us.get(v.baseline, [])
            figures["baseline"] = v.baseline
            figures["overhead_us"] = _stats([a - b for a, b in zip(runs, base, strict=False)])
        variants[v.name] = figures
    return {"variants": variants, "missing": dict(group.missing)}


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }
