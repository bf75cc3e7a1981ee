"""The order benchmark's figures: one phase's, and the whole run's, as the JSON reports them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psutil

from eventshop.bench.orders.config import (
    BENCH_ENV,
    BROKER_LIMIT_MSG_S,
    FINAL_EVENTS,
    OrdersBenchConfig,
)
from eventshop.bench.orders.measure import Idle, cpu_delta, deliveries_of, machine_delta
from eventshop.bench.orders.phase import PhaseResult
from eventshop.bench.orders.platform import PlatformState
from eventshop.bench.orders.watcher import FinalWatcher

PLATFORM_LABELS_EXCLUDED = ("bench client", "postgres (bench client)")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {
        "p50": round(rank(0.50), 1),
        "p95": round(rank(0.95), 1),
        "p99": round(rank(0.99), 1),
        "max": round(s[-1], 1),
    }


def phase_report(
    p: PhaseResult,
    idle: Idle,
    bindings: Sequence[tuple[str, str]],
    watcher_queue: str,
) -> dict[str, Any]:
    placed = [r for r in p.records if r.order_id]
    failed = [r for r in p.records if not r.order_id]
    finals = [(r, p.watcher_finals[r.order_id]) for r in placed if r.order_id in p.watcher_finals]
    n = len(placed)
    confirmed = sum(1 for _, f in finals if f.event_type == "order.confirmed")
    reasons = Counter(str(f.reason) for _, f in finals if f.event_type == "order.cancelled")
    last_final = max((f.at for _, f in finals), default=p.t0)
    final_times = sorted(f.at for _, f in finals)
    steady: float | None = None
    if len(final_times) >= 20:
        lo, hi = final_times[len(final_times) // 10], final_times[(len(final_times) * 9) // 10]
        if hi > lo:
            steady = ((len(final_times) * 9) // 10 - len(final_times) // 10) / (hi - lo)
    run_s = max(last_final - p.t0, 1e-9)
    place_s = max(p.placed_at - p.t0, 1e-9)
    window_s = p.after.at - p.before.at
    final_rate = len(finals) / run_s

    # messages: every event of the run, and the queues each type is delivered to
    published = sum(p.events.values())
    delivered = sum(n_ * deliveries_of(t, bindings, watcher_queue) for t, n_ in p.events.items())
    watched = sum(p.events.get(t, 0) for t in FINAL_EVENTS)
    per_order = max(n, 1)
    msgs_per_order = (published + delivered) / per_order
    deliveries_per_order = delivered / per_order

    # CPU: per process group, ms per order; the platform excludes the benchmark's own client
    cpu = cpu_delta(p.before, p.after)
    machine_busy = machine_delta(p.before, p.after)
    attributed = sum(cpu.values())
    cpu["unattributed (kernel, others)"] = max(0.0, machine_busy - attributed)
    cpu_ms = {k: round(v * 1000 / per_order, 2) for k, v in sorted(cpu.items())}
    platform_s = sum(
        v
        for k, v in cpu.items()
        if k not in PLATFORM_LABELS_EXCLUDED and not k.startswith("unattributed")
    )
    idle_platform_s = sum(v for k, v in idle.cpu_s.items() if k not in PLATFORM_LABELS_EXCLUDED)
    hottest = max(
        ((k, v) for k, v in cpu.items() if not k.startswith("unattributed")),
        key=lambda kv: kv[1],
        default=("", 0.0),
    )

    # database: write transactions (xids) at once; statistics late, corrected for idle time
    xids = p.after.xid - p.before.xid
    stats_s = p.pg_after.at - p.pg_before.at
    xact = (p.pg_after.xact_commit - p.pg_before.xact_commit) - idle.xact_per_s * max(
        0.0, stats_s - window_s
    )
    post_ms = [(r.answered - r.start) * 1000 for r in placed]
    final_ms = [(f.at - r.start) * 1000 for r, f in finals]
    lag_ms = [(r.first_send - r.start) * 1000 for r in placed] if p.offered_rate else []
    return {
        "phase": p.name,
        "mode": p.mode,
        "offered_rate": round(p.offered_rate, 1) if p.offered_rate else None,
        "orders": len(p.records),
        "placed": n,
        "place_failed": len(failed),
        "place_errors": Counter(str(r.error)[:80] for r in failed).most_common(3),
        "post_retries": sum(r.attempts - 1 for r in p.records),
        "final": len(finals),
        "not_final": n - len(finals),
        "confirmed": confirmed,
        "cancelled": sum(reasons.values()),
        "cancel_reasons": dict(reasons),
        "orders_per_s_placed": round(n / place_s, 1),
        "orders_per_s_final": round(final_rate, 1),
        "orders_per_s_final_steady": round(steady, 1) if steady else None,
        "seconds_placing": round(place_s, 2),
        "seconds_to_last_final": round(run_s, 2),
        "post_ms": percentiles(post_ms),
        "final_ms": percentiles(final_ms),
        "p50_post_ms": percentiles(post_ms)["p50"],
        "p99_post_ms": percentiles(post_ms)["p99"],
        "p50_final_ms": percentiles(final_ms)["p50"],
        "p95_final_ms": percentiles(final_ms)["p95"],
        "p99_final_ms": percentiles(final_ms)["p99"],
        "client_lag_ms": percentiles(lag_ms) if lag_ms else None,
        # where the time to final goes: each step of a confirmed order's saga
        "saga_steps_ms": {step: percentiles(ms) for step, ms in p.saga_steps.items()},
        "events": dict(sorted(p.events.items())),
        "events_per_order": round(published / per_order, 2),
        "amqp_published_per_order": round(published / per_order, 2),
        "amqp_delivered_per_order": round(deliveries_per_order, 2),
        "amqp_messages_per_order": round(msgs_per_order, 2),
        "benchmark_queue_deliveries_per_order": round(watched / per_order, 2),
        "broker_msgs_per_s": round(msgs_per_order * final_rate),
        "broker_fraction": round(msgs_per_order * final_rate / BROKER_LIMIT_MSG_S, 3),
        "broker_fraction_deliveries": round(
            deliveries_per_order * final_rate / BROKER_LIMIT_MSG_S, 3
        ),
        "db_write_commits_per_order": round(xids / per_order, 2),
        "db_xact_commits_per_order": round(xact / per_order, 2),
        "db_rollbacks": p.pg_after.xact_rollback - p.pg_before.xact_rollback,
        "db_rows_written_per_order": round(
            (p.pg_after.tup_written - p.pg_before.tup_written) / per_order, 1
        ),
        "db_rows_written_per_order_by_table": {
            t: round(w / per_order, 2)
            for t, w in sorted(
                ((t, w - p.pg_before.tables.get(t, 0)) for t, w in p.pg_after.tables.items()),
                key=lambda tw: -tw[1],
            )[:15]
            if w > 0
        },
        "wal_bytes_per_order": round((p.after.wal_lsn - p.before.wal_lsn) / per_order),
        "wal_syncs_per_order": round((p.pg_after.wal_sync - p.pg_before.wal_sync) / per_order, 2),
        "wal_full_page_images_per_order": round(
            (p.pg_after.wal_fpi - p.pg_before.wal_fpi) / per_order, 2
        ),
        "cpu_ms_per_order": cpu_ms,
        "cpu_ms_per_order_platform": round(platform_s * 1000 / per_order, 2),
        "cpu_ms_per_order_platform_net_of_idle": round(
            (platform_s - idle_platform_s * window_s) * 1000 / per_order, 2
        ),
        "cpu_ms_per_order_client": round(
            sum(cpu.get(k, 0.0) for k in PLATFORM_LABELS_EXCLUDED) * 1000 / per_order, 2
        ),
        "cpu_ms_per_order_machine": round(machine_busy * 1000 / per_order, 2),
        "cpu_cores_busy": round(machine_busy / window_s, 2),
        "steal_s": round(machine_delta(p.before, p.after, "steal"), 2),
        "hottest_process": hottest[0],
        "measure_window_s": round(window_s, 2),
        "outbox_unsent": p.outbox_unsent,
        "invariants_ok": p.invariants.ok,
        "violations": p.invariants.violations[:10],
    }


def run_report(
    cfg: OrdersBenchConfig,
    reports: Sequence[dict[str, Any]],
    *,
    run: str,
    setup: dict[str, int],
    platform: PlatformState,
    idle: Idle,
    bindings: Sequence[tuple[str, str]],
    watcher: FinalWatcher,
) -> dict[str, Any]:
    """The whole run: the first phase's figures at the top, the half-rate phase's under
    "half_rate", then what the run was made of (shop, profile, idle platform, bindings)."""
    first = reports[0]
    result: dict[str, Any] = dict(first)
    result.pop("phase")
    if len(reports) > 1:
        half = reports[1]
        result["half_rate"] = {k: v for k, v in half.items() if k != "phase"}
        result["p99_final_ms_at_half_rate"] = half["p99_final_ms"]
        result["invariants_ok"] = first["invariants_ok"] and half["invariants_ok"]
    result["duplicate_finals_seen"] = watcher.duplicates
    result["conflicting_finals_seen"] = watcher.conflicting
    result.update(
        {
            "run": run,
            "products": cfg.products,
            "shoppers": cfg.users,
            "max_lines": cfg.max_lines,
            "replicas": cfg.replicas,
            "setup": setup,
            "profile": BENCH_ENV if cfg.configure or platform.started else "as found",
            "profile_in_effect": not platform.profile_differences,
            "profile_differences": platform.profile_differences,
            "idle_platform_cpu_ms_per_s": round(
                sum(v for k, v in idle.cpu_s.items() if k not in PLATFORM_LABELS_EXCLUDED) * 1000
            ),
            "idle_xact_per_s": round(idle.xact_per_s, 1),
            "bindings": sorted({f"{q} <- {k}" for q, k in bindings}),
            "broker_limit_msg_s": BROKER_LIMIT_MSG_S,
            "cores": psutil.cpu_count(),
        }
    )
    return result
