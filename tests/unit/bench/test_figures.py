"""The benchmarks' arithmetic, on made-up samples: CPU accounting, percentiles, bindings, the
orders' summary table (no process, broker or database is touched)."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from eventshop.bench.bus.config import BenchConfig
from eventshop.bench.cpu import CpuSample, by_label, spent
from eventshop.bench.orders.measure import _topic_matches, deliveries_of, saga_step_times
from eventshop.bench.orders.report import percentiles
from eventshop.bench.orders.tables import SUMMARY, _cell, saga_steps_table
from eventshop.platform.settings import PlatformSettings

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal")


def test_cpu_spent_counts_from_zero_for_a_new_or_reused_pid_and_drops_the_dead() -> None:
    before = CpuSample(0.0, {1: ("a", 2.0), 2: ("b", 5.0), 3: ("gone", 1.0)}, Times(*[0.0] * 8))
    after = CpuSample(1.0, {1: ("a", 3.5), 2: ("b", 0.25), 4: ("a", 1.0)}, Times(*[0.0] * 8))
    assert spent(before, after) == {1: ("a", 1.5), 2: ("b", 0.25), 4: ("a", 1.0)}
    assert by_label(spent(before, after)) == {"a": 2.5, "b": 0.25}


def test_the_machine_is_busy_when_neither_idle_nor_waiting_for_io() -> None:
    sample = CpuSample(0.0, {}, Times(10.0, 1.0, 4.0, 80.0, 3.0, 0.5, 0.5, 1.0))
    assert sample.machine_busy == 17.0
    assert sample.machine_time("steal") == 1.0
    assert sample.machine_time("guest") == 0.0
    relabelled = CpuSample(0.0, {7: ("postgres", 1.0)}, sample.machine).relabelled({7: "pg (x)"})
    assert relabelled.processes == {7: ("pg (x)", 1.0)}


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert percentiles([float(i) for i in range(1, 101)]) == {
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
    }


def test_an_event_goes_once_to_each_queue_bound_to_it() -> None:
    assert _topic_matches("#", "order.created")
    assert _topic_matches("order.*", "order.created")
    assert not _topic_matches("order.*", "order.created.v2")
    assert _topic_matches("a.#.c", "a.c")
    bindings = [("inv", "order.*"), ("inv", "order.created"), ("archive", "#"), ("mine", "#")]
    assert deliveries_of("order.created", bindings, skip="mine") == 2


def test_the_orders_summary_formats_each_phase_as_before() -> None:
    figures: dict[str, Any] = {
        "placed": 10,
        "place_failed": 1,
        "broker_fraction": 0.0234,
        "wal_bytes_per_order": 2500,
        "wal_syncs_per_order": 1.5,
        "client_lag_ms": None,
        "orders_per_s_final": 12.5,
        "orders_per_s_final_steady": None,
        "post_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
    }
    rows = dict(SUMMARY)
    assert _cell(rows["placed / failed"], figures) == "10 / 1"
    assert _cell(rows["share of broker limit"], figures) == "2.3%"
    assert _cell(rows["WAL kB, syncs per order"], figures) == "2.5, 1.5"
    assert _cell(rows["client lag ms p99"], figures) == "-"
    assert _cell(rows["orders/s final (steady)"], figures) == "12.5 (None)"
    assert _cell(rows["POST ms p50/95/99/max"], figures) == "1.0/2.0/3.0/4.0"


T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _saga(order: str, *offsets_ms: float) -> list[tuple[str, str, datetime]]:
    types = ["order.created", "inventory.reserved", "payment.requested", "payment.succeeded"]
    types.append("order.confirmed")
    return [
        (order, t, T0 + timedelta(milliseconds=ms))
        for t, ms in zip(types, offsets_ms, strict=False)
    ]


def test_the_saga_steps_are_timed_between_neighbouring_events_of_confirmed_orders_only() -> None:
    rows = [
        *_saga("a", 0, 10, 30, 130, 140),
        *_saga("b", 5, 25, 30, 80, 100),
        # cancelled for stock: no payment, no confirmation; not counted anywhere
        *_saga("c", 0, 40),
        ("c", "order.cancelled", T0 + timedelta(milliseconds=50)),
    ]
    times = saga_step_times(reversed(rows))  # in whatever order the database returns them
    assert {step: sorted(ms) for step, ms in times.items()} == {
        "order.created -> inventory.reserved": [10.0, 20.0],
        "inventory.reserved -> payment.requested": [5.0, 20.0],
        "payment.requested -> payment.succeeded": [50.0, 100.0],
        "payment.succeeded -> order.confirmed": [10.0, 20.0],
        "order.created -> order.confirmed": [95.0, 140.0],
    }


def test_the_saga_steps_table_shows_each_phase_and_is_left_out_without_steps() -> None:
    steps = {"order.created -> inventory.reserved": percentiles([1.0, 2.0, 3.0])}
    phases: list[dict[str, Any]] = [
        {"offered_rate": None, "mode": "closed loop, concurrency 32", "saga_steps_ms": steps},
        {"offered_rate": 44.0, "mode": "open", "saga_steps_ms": {}},
    ]
    table = saga_steps_table(phases)
    assert table is not None
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "order.created -> inventory.reserved" in text and "2.0/3.0/3.0" in text
    assert "C=32" in text and "open 44.0/s" in text
    assert saga_steps_table([{"offered_rate": None, "mode": "m"}]) is None


def test_a_bus_run_names_its_exchange_queue_and_schemas_after_its_tag() -> None:
    cfg = BenchConfig(settings=PlatformSettings(), events=10, raw_messages=10, tag="t1")
    assert (cfg.exchange, cfg.raw_queue, cfg.producer, cfg.consumer) == (
        "eventshop.bench.t1",
        "bench_t1_raw",
        "bench_t1_out",
        "bench_t1_in",
    )
    assert cfg.child(schema="s")["exchange"] == "eventshop.bench.t1"
