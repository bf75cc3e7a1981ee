"""The bus benchmark's report: the JSON figures of a run, and the tables for a human."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from eventshop.bench.bus.config import MESSAGE_SIZE, BenchConfig
from eventshop.bench.bus.measure import Phase

PROCESSES = ("writer", "relay", "consumer", "publisher", "broker", "database")
OUTSIDE = ("bench", "other processes", "kernel irq", "steal")


def _busy(p: Phase, cores: int) -> float:
    return p.cpu["machine"] / (p.cpu["wall"] * cores) if p.cpu["wall"] > 0 else 0.0


def _limit(p: Phase, cores: int) -> str:
    """What limited a phase, in a sentence: the machine, the stage that finished last, the
    process that spent the most CPU per message (and how much of one core that was)."""
    spent = {k: v for k, v in p.cpu.items() if k in PROCESSES}
    top = max(spent, key=lambda k: spent[k])
    total = sum(spent.values()) / p.count * 1e6
    busy = _busy(p, cores)
    state = "CPU-bound: the machine was" if busy > 0.9 else "the machine was"
    text = f"{state} {busy:.0%} busy ({total:.0f} us of CPU per message, {cores} cores)"
    stages = {
        k: p.extra[f"{k}_done_s"]
        for k in ("writer", "relay", "consumer")
        if f"{k}_done_s" in p.extra
    }
    if stages:
        order = sorted(stages, key=lambda k: stages[k])
        last, before = order[-1], order[-2]
        text += (
            f"; the {last} stage paced it, done {stages[last] - stages[before]:.2f} s after the"
            f" {before} (writer {stages['writer']:.2f} s, relay {stages['relay']:.2f} s,"
            f" consumer {stages['consumer']:.2f} s)"
        )
    core = spent[top] / p.seconds
    text += (
        f"; the {top} spent the most CPU, {spent[top] / p.count * 1e6:.0f} us per message,"
        f" {core:.0%} of a core" + (": that process was saturated" if core > 0.85 else "")
    )
    share = _outside_share(p)
    if share > 0.1:
        text += f"; NOISY: processes outside the benchmark took {share:.0%} of the CPU used"
    return text


def _outside_share(p: Phase) -> float:
    """The part of the machine's CPU spent by processes outside the benchmark."""
    return p.cpu["other processes"] / p.cpu["machine"] if p.cpu["machine"] > 0 else 0.0


def summarise(cfg: BenchConfig, phases: list[Phase]) -> dict[str, Any]:
    cores = psutil.cpu_count() or 1
    by = {p.name: p for p in phases}
    e2e = by["outbox e2e"]
    raw_runs = [p for p in phases if p.name.startswith("raw end to end")]
    raw_e2e = max(raw_runs, key=lambda p: p.rate) if raw_runs else None

    def rate(name: str) -> float | None:
        return round(by[name].rate, 1) if name in by else None

    def per_msg(p: Phase) -> dict[str, float]:
        return {k: round(v / p.count * 1e6, 1) for k, v in p.cpu.items() if k in PROCESSES}

    report: dict[str, Any] = {
        "events": e2e.count,
        "seconds": round(e2e.seconds, 3),
        "events_per_s": round(e2e.rate, 1),
        "raw_publish_per_s": rate("raw publish"),
        "raw_consume_per_s": rate("raw consume"),
        "raw_e2e_per_s": round(raw_e2e.rate, 1) if raw_e2e else None,
        "raw_e2e_pattern": raw_e2e.name.rsplit(", ", 1)[-1] if raw_e2e else None,
        "ratio_to_raw_e2e": round(e2e.rate / raw_e2e.rate, 3) if raw_e2e else None,
        "lost": e2e.extra["lost"],
        "duplicate_effects": e2e.extra["duplicate_effects"],
        "cpu_s": {k: round(v, 3) for k, v in e2e.cpu.items() if k in PROCESSES},
        "cpu_us_per_event": per_msg(e2e),
        # CPU of the machine spent outside the measured processes in the same interval
        "cpu_outside_s": {k: round(e2e.cpu[k], 3) for k in OUTSIDE},
        "machine_busy": round(_busy(e2e, cores), 3),
        "outside_share": round(_outside_share(e2e), 3),
        "limit": _limit(e2e, cores),
        "raw_limit": _limit(raw_e2e, cores) if raw_e2e else None,
        "phases": [
            {
                "name": p.name,
                "messages": p.count,
                "seconds": round(p.seconds, 3),
                "per_s": round(p.rate, 1),
                "machine_busy": round(_busy(p, cores), 3),
                "cpu_s": {k: round(v, 3) for k, v in p.cpu.items() if k in PROCESSES},
                "cpu_us_per_message": per_msg(p),
                "cpu_outside_s": {k: round(p.cpu[k], 3) for k in OUTSIDE},
            }
            for p in phases
        ],
        "details": {k: v for k, v in e2e.extra.items() if k not in ("lost", "duplicate_effects")},
        "client": "aio-pika 10.2.1 on uvloop",
        "cores": cores,
        "message_bytes": MESSAGE_SIZE,
        "write_batch": cfg.write_batch,
        "prefetch": cfg.prefetch,
    }
    report["target"] = TARGET
    report["targets_met"] = targets_met(report)
    return report


#: what `targets_met` checks (docs/PERFORMANCE.md §3)
TARGET = "at least 2 times raw aio-pika's end-to-end rate, 0 lost, 0 duplicate effects"


def targets_met(report: Mapping[str, Any]) -> bool | None:
    """The bus's target: through outbox, relay and inbox at least twice the rate of raw
    aio-pika's end to end on the same broker, nothing lost, nothing applied twice. None when
    raw aio-pika was not measured (`--no-raw`) and nothing was lost or duplicated."""
    if report["lost"] or report["duplicate_effects"]:
        return False
    ratio = report["ratio_to_raw_e2e"]
    return None if ratio is None else ratio >= 2.0


def of_rounds(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds in one report: each round's figures, and their medians at the top level
    (events/s, raw aio-pika's end-to-end rate, the ratio of each round, CPU per event); lost
    and duplicate effects summed; the tables and the limit those of the median round (by
    ratio, or by events/s without raw)."""

    def median(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 3) if known else None

    key = "ratio_to_raw_e2e" if reports[0]["ratio_to_raw_e2e"] is not None else "events_per_s"
    middle = sorted(reports, key=lambda r: r[key])[(len(reports) - 1) // 2]
    report = dict(middle)
    report.update(
        rounds=[
            {
                "events_per_s": r["events_per_s"],
                "raw_e2e_per_s": r["raw_e2e_per_s"],
                "ratio_to_raw_e2e": r["ratio_to_raw_e2e"],
                "cpu_us_per_event": r["cpu_us_per_event"],
                "lost": r["lost"],
                "duplicate_effects": r["duplicate_effects"],
            }
            for r in reports
        ],
        events_per_s=median([r["events_per_s"] for r in reports]),
        raw_e2e_per_s=median([r["raw_e2e_per_s"] for r in reports]),
        ratio_to_raw_e2e=median([r["ratio_to_raw_e2e"] for r in reports]),
        cpu_us_per_event={
            k: median([r["cpu_us_per_event"][k] for r in reports])
            for k in reports[0]["cpu_us_per_event"]
        },
        lost=sum(r["lost"] for r in reports),
        duplicate_effects=sum(r["duplicate_effects"] for r in reports),
        median_round=reports.index(middle) + 1,
    )
    report["targets_met"] = targets_met(report)  # on the medians, lost and duplicates summed
    return report


def print_report(report: Mapping[str, Any], console: Any) -> None:
    """Two tables (rates; CPU per message by process) and the limit, for a human."""
    from rich.table import Table

    phases = report["phases"]
    rates = Table(title=f"bus benchmark: {report['client']}, {report['cores']} cores")
    for col, just in (
        ("phase", "left"),
        ("messages", "right"),
        ("seconds", "right"),
        ("per second", "right"),
        ("CPU busy", "right"),
    ):
        rates.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in phases:
        rates.add_row(
            p["name"],
            f"{p['messages']:,}",
            f"{p['seconds']:.2f}",
            f"{p['per_s']:,.0f}",
            f"{p['machine_busy']:.0%}",
        )
    console.print(rates)

    cpu = Table(title="CPU per message, microseconds (seconds in all)")
    cpu.add_column("process")
    for p in phases:
        cpu.add_column(p["name"], justify="right")
    for name in PROCESSES:
        if not any(name in p["cpu_s"] for p in phases):
            continue
        cpu.add_row(
            name,
            *(
                f"{p['cpu_us_per_message'][name]:.0f} ({p['cpu_s'][name]:.2f})"
                if name in p["cpu_s"]
                else "-"
                for p in phases
            ),
        )
    cpu.add_row("all of these", *(f"{sum(p['cpu_us_per_message'].values()):.0f}" for p in phases))
    for name in OUTSIDE:
        cpu.add_row(
            f"[dim]{name}[/]",
            *(
                f"[dim]{p['cpu_outside_s'][name] / p['messages'] * 1e6:.0f}"
                f" ({p['cpu_outside_s'][name]:.2f})[/]"
                for p in phases
            ),
        )
    console.print(cpu)
    d = report["details"]
    ratio = report["ratio_to_raw_e2e"]
    of = f" (medians of {len(report['rounds'])} rounds)" if "rounds" in report else ""
    console.print(
        f"end to end through outbox and inbox{of}:"
        f" [bold]{report['events_per_s']:,.0f} events/s[/]"
        + (f", {ratio:.0%} of the raw client's end-to-end rate" if ratio is not None else "")
        + f"; lost {report['lost']}, duplicate effects {report['duplicate_effects']}"
        f" (committed {d['committed']:,}, effect rows {d['effect_rows']:,},"
        f" {d['consumer_batches']} consumer transactions)"
    )
    console.print(f"limit: {report['limit']}")
    if report["raw_limit"]:
        console.print(f"raw client limit: {report['raw_limit']}")
    if "rounds" in report:
        _print_rounds(report, console)
    met = {True: "met", False: "not met", None: "not judged (raw aio-pika not measured)"}
    console.print(f"target ({report['target']}): {met[report['targets_met']]}")


def _print_rounds(report: Mapping[str, Any], console: Any) -> None:
    from rich.table import Table

    rounds = Table(
        title=f"{len(report['rounds'])} rounds (the tables above: round {report['median_round']},"
        " the median)"
    )
    for col in ("round", "events/s", "raw end to end/s", "ratio", "CPU µs/event", "lost, dup"):
        rounds.add_column(col, justify="right")
    for i, r in enumerate(report["rounds"], 1):
        rounds.add_row(
            str(i),
            f"{r['events_per_s']:,.0f}",
            f"{r['raw_e2e_per_s']:,.0f}" if r["raw_e2e_per_s"] else "-",
            f"{r['ratio_to_raw_e2e']:.3f}" if r["ratio_to_raw_e2e"] else "-",
            f"{sum(r['cpu_us_per_event'].values()):.1f}",
            f"{r['lost']}, {r['duplicate_effects']}",
        )
    ratio = report["ratio_to_raw_e2e"]
    rounds.add_row(
        "median",
        f"{report['events_per_s']:,.0f}",
        f"{report['raw_e2e_per_s']:,.0f}" if report["raw_e2e_per_s"] else "-",
        f"{ratio:.3f}" if ratio else "-",
        f"{sum(report['cpu_us_per_event'].values()):.1f}",
        f"{report['lost']}, {report['duplicate_effects']}",
    )
    console.print(rounds)
