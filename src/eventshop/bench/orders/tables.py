"""The order benchmark's report for a human: a summary table, CPU by process, and the notes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

Figures = Mapping[str, Any]


def _percentiles(key: str) -> Callable[[Figures], str]:
    return lambda p: "/".join(str(v) for v in p[key].values())


#: the summary's rows: a label and, for each phase's figures, a format string or a function
SUMMARY: list[tuple[str, str | Callable[[Figures], object]]] = [
    ("placed / failed", "{placed} / {place_failed}"),
    ("confirmed/cancelled/not final", "{confirmed}/{cancelled}/{not_final}"),
    ("orders/s placed", "{orders_per_s_placed}"),
    ("orders/s final (steady)", "{orders_per_s_final} ({orders_per_s_final_steady})"),
    ("POST ms p50/95/99/max", _percentiles("post_ms")),
    ("final ms p50/95/99/max", _percentiles("final_ms")),
    ("client lag ms p99", lambda p: p["client_lag_ms"]["p99"] if p["client_lag_ms"] else "-"),
    ("events/order", "{events_per_order}"),
    (
        "AMQP msgs/order",
        "{amqp_messages_per_order} = {amqp_published_per_order} + {amqp_delivered_per_order}",
    ),
    ("share of broker limit", "{broker_fraction:.1%}"),
    ("DB commits/order write, all", "{db_write_commits_per_order}, {db_xact_commits_per_order}"),
    ("DB rows written/order", "{db_rows_written_per_order}"),
    (
        "WAL kB, syncs per order",
        lambda p: f"{p['wal_bytes_per_order'] / 1000:.1f}, {p['wal_syncs_per_order']}",
    ),
    ("CPU ms/order platform", "{cpu_ms_per_order_platform}"),
    ("CPU ms/order client", "{cpu_ms_per_order_client}"),
    ("CPU ms/order machine", "{cpu_ms_per_order_machine}"),
    ("cores busy", "{cpu_cores_busy}"),
    ("invariants", lambda p: "[green]hold[/]" if p["invariants_ok"] else "[red]VIOLATED[/]"),
]


def _cell(how: str | Callable[[Figures], object], p: Figures) -> str:
    return how.format_map(p) if isinstance(how, str) else str(how(p))


def _short_mode(p: Figures) -> str:
    rate = p.get("offered_rate")
    return f"open {rate}/s" if rate else str(p["mode"]).replace("closed loop, concurrency ", "C=")


def saga_steps_table(phases: Sequence[Figures]) -> Table | None:
    """Where a confirmed order's time to final goes: each step of its saga, p50/p95/p99 ms."""
    names = list(dict.fromkeys(k for p in phases for k in p.get("saga_steps_ms", {})))
    if not names:
        return None
    table = Table(title="ms between a confirmed order's events, p50/p95/p99 (their occurred_at)")
    table.add_column("")
    for p in phases:
        table.add_column(_short_mode(p), justify="right")
    for name in names:
        cells = []
        for p in phases:
            ms = p.get("saga_steps_ms", {}).get(name)
            cells.append(
                "-" if not ms or ms["p50"] is None else f"{ms['p50']}/{ms['p95']}/{ms['p99']}"
            )
        table.add_row(name, *cells)
    return table


def print_report(report: Figures, console: Console) -> None:
    phases: list[Figures] = [report]
    if "half_rate" in report:
        phases.append(report["half_rate"])
    title = f"bench orders: {report['products']} products, {report['shoppers']} shoppers"
    summary = Table(title=title)
    cpu = Table(title="CPU ms per order, by process (postgres: by the client it serves)")
    for table in (summary, cpu):
        table.add_column("")
        for p in phases:
            table.add_column(_short_mode(p), justify="right")
    for label, how in SUMMARY:
        summary.add_row(label, *(_cell(how, p) for p in phases))
    labels = sorted(
        {k for p in phases for k in p["cpu_ms_per_order"]},
        key=lambda k: -float(report["cpu_ms_per_order"].get(k, 0.0)),
    )
    for label in labels:
        cpu.add_row(label, *(str(p["cpu_ms_per_order"].get(label, "-")) for p in phases))
    console.print(summary)
    console.print(cpu)
    steps = saga_steps_table(phases)
    if steps is not None:
        console.print(steps)
    for p in phases:
        for v in p["violations"]:
            console.print(f"[red]{v}[/]")
        if p["outbox_unsent"]:
            console.print(f"[red]left unsent in outboxes: {p['outbox_unsent']}[/]")
    console.print(
        f"idle platform: {report['idle_platform_cpu_ms_per_s']} ms CPU/s, "
        f"{report['idle_xact_per_s']} transactions/s; benchmark profile in effect: "
        f"{report['profile_in_effect']}; the benchmark's own queue adds "
        f"{report['benchmark_queue_deliveries_per_order']} delivery per order (not counted)"
    )
