"""`eventshop bench ab A B`: two versions of eventshop measured in one window, alternately.

Machines here are shared and differ from one another by a third: a figure measured an hour ago,
or on another machine, cannot be compared with one measured now. So both versions run in the
same window, in rounds A B, B A, A B ... (each round swaps who goes first, so a drift of the
machine over the window falls on both alike), and the medians of each and their ratio are what
is reported.

Each git ref gets a clone of its own under var/ab/<commit> with its own virtualenv (its own
scripts/ensure-venv.sh), and runs `eventshop bench orders` there, which starts that version's
platform with the benchmark profile and stops it at the end. Between them, nothing else of
eventshop runs: the checkout's own platform is stopped first.

What the versions share, so that one can start after the other on one machine:
- the broker users' passwords: both are given this installation's (EVENTSHOP_<SVC>_AMQP_PASSWORD),
  which each version's start sets on the broker, and the benchmark's own connection is the
  operator's (EVENTSHOP_AMQP_URL);
- nothing else in the database: each version gets a database of its own,
  eventshop_ab_<commit>, made anew at the start of each window, so neither meets the other's
  migrations, and both start the window as empty as the other.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from eventshop.platform.secrets import secret
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling import supervise

#: the figures compared: (key in the bench's JSON, label, which way is better)
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("orders_per_s_final", "orders/s reaching final", "higher"),
    ("cpu_ms_per_order_platform", "platform CPU ms per order", "lower"),
    ("p99_final_ms_at_half_rate", "p99 to final at half rate, ms", "lower"),
    ("p99_final_ms_at_rate", "p99 to final at the same offered rate, ms", "lower"),
    ("cpu_ms_per_order_platform_at_rate", "platform CPU ms per order at that rate", "lower"),
)

Say = Callable[[str], object]


@dataclass
class Version:
    ref: str
    commit: str
    root: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.ref} ({self.commit[:9]})" if self.ref != self.commit else self.commit[:9]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=300
    ).stdout.strip()


def prepare(root: Path, ref: str, say: Say) -> Version:
    """A clone of `ref` under var/ab with its virtualenv, made once and kept."""
    commit = _git(root, "rev-parse", "--verify", f"{ref}^{{commit}}")
    clone = root / "var" / "ab" / commit[:12]
    if not (clone / ".git").exists():
        say(f"cloning {ref} into {clone}")
        clone.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "clone", "--quiet", "--no-checkout", str(root), str(clone)],
            check=True, timeout=600,
        )  # fmt: skip
        _git(clone, "checkout", "--quiet", commit)
    if not (clone / ".venv" / "bin" / "eventshop").exists():
        say(f"making {ref}'s virtualenv (its scripts/ensure-venv.sh)")
        subprocess.run(["scripts/ensure-venv.sh"], cwd=clone, check=True, timeout=1800)
    return Version(ref, commit, clone)


def _database_of(version: Version) -> str:
    base = urlsplit(PlatformSettings().database_url)
    return urlunsplit(base._replace(path=f"/eventshop_ab_{version.commit[:12]}"))


async def _create_database(url: str) -> None:
    """The version's database, made anew: what an earlier window left in it (its orders, its
    events, its outbox) would weigh on this version's runs and not on the other's, whose
    database may be new (a version measured for the first time)."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(PlatformSettings().database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def environment(version: Version, services: Sequence[str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # the caller's own eventshop settings would bind one version and not the other
        if not k.startswith("EVENTSHOP_") and k not in ("VIRTUAL_ENV",)
    }
    env.update(
        {f"EVENTSHOP_{s.upper()}_AMQP_PASSWORD": secret(f"amqp-{s}") for s in services},
        EVENTSHOP_DATABASE_URL=_database_of(version),
        # the operator's user for the benchmark's own connection: guest has no rights on the
        # platform's vhost since the services got users of their own
        EVENTSHOP_AMQP_URL=PlatformSettings().amqp_url,
        EVENTSHOP_HOME=str(version.root),
        PATH=f"{version.root / '.venv' / 'bin'}:{env.get('PATH', '')}",
    )
    return env


def run_once(
    version: Version, bench_args: Sequence[str], env: dict[str, str], say: Say
) -> dict[str, Any]:
    """One `eventshop bench orders` of `version`; its JSON figures."""
    eventshop = str(version.root / ".venv" / "bin" / "eventshop")
    log = version.root / "var" / "log" / "ab-bench.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as err:
        done = subprocess.run(
            [eventshop, "bench", "orders", *bench_args],
            cwd=version.root, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            timeout=3600, check=False,
        )  # fmt: skip
    subprocess.run(
        [eventshop, "down"], cwd=version.root, env=env, capture_output=True, timeout=300,
        check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    try:
        figures: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(
            f"{version.name}: bench orders printed no figures (exit {done.returncode}); see {log}"
        ) from None
    figures["exit_code"] = done.returncode
    half = figures.get("p99_final_ms_at_half_rate")
    say(
        f"{version.name} {' '.join(bench_args)}: {figures.get('orders_per_s_final')} orders/s, "
        f"{figures.get('cpu_ms_per_order_platform')} ms CPU/order, p99 to final "
        f"{figures.get('p99_final_ms')} ms"
        + (f", at half rate {half} ms" if half else "")
        + f" ({time.monotonic() - started:.0f} s)"
    )
    return figures


def order_of_rounds(rounds: int) -> list[tuple[int, int]]:
    """(first, second) per round: A B, then B A, then A B ...; 0 is A, 1 is B."""
    return [(0, 1) if r % 2 == 0 else (1, 0) for r in range(rounds)]


def with_rate_run(figures: dict[str, Any], at_rate: dict[str, Any], rate: float) -> dict[str, Any]:
    """A run's figures with those of its open-loop run at `rate` (`--rate`): the p99 to final
    and the CPU per order (the platform's, and by process) at that offered rate; the run is
    sound only if both were."""
    return {
        **figures,
        "p99_final_ms_at_rate": at_rate.get("p99_final_ms"),
        "cpu_ms_per_order_platform_at_rate": at_rate.get("cpu_ms_per_order_platform"),
        "at_rate": {"cpu_ms_per_order": at_rate.get("cpu_ms_per_order")},
        "offered_rate": rate,
        "invariants_ok": bool(figures.get("invariants_ok") and at_rate.get("invariants_ok")),
        "exit_code": figures.get("exit_code") or at_rate.get("exit_code"),
    }


def _value(run: dict[str, Any], key: str) -> float | None:
    value = run.get(key)
    return value if isinstance(value, int | float) else None


def summary(a: Version, b: Version) -> dict[str, Any]:
    """Per figure measured: each version's runs, median and range, the ratio of the medians
    B/A, and the ratio B/A of each round's pair with their median. A machine that drifts over
    the window moves both runs of a round alike: the pairs' ratios are the steadier figure."""
    figures: dict[str, Any] = {}
    for key, label, better in FIGURES:
        row: dict[str, Any] = {"label": label, "better": better}
        for side, version in (("a", a), ("b", b)):
            values = [v for r in version.runs if (v := _value(r, key)) is not None]
            row[side] = {
                "runs": values,
                "median": round(statistics.median(values), 3) if values else None,
                "range": [min(values), max(values)] if values else None,
            }
        if not row["a"]["runs"] and not row["b"]["runs"]:
            continue  # not measured in this window (no --rate, say)
        ma, mb = row["a"]["median"], row["b"]["median"]
        row["ratio_b_to_a"] = round(mb / ma, 3) if ma and mb is not None else None
        pairs = [
            round(vb / va, 3)
            for ra, rb in zip(a.runs, b.runs, strict=False)
            if (va := _value(ra, key)) and (vb := _value(rb, key)) is not None
        ]
        row["round_ratios"] = pairs
        row["round_ratio_median"] = round(statistics.median(pairs), 3) if pairs else None
        figures[key] = row
    ok = all(r.get("exit_code") == 0 and r.get("invariants_ok") for v in (a, b) for r in v.runs)
    return {
        "a": {"ref": a.ref, "commit": a.commit},
        "b": {"ref": b.ref, "commit": b.commit},
        "rounds": len(a.runs),
        "figures": figures,
        "processes": processes(a, b),
        "open_loop": _open_loop([*a.runs, *b.runs]),
        "every_run_ok": ok,
    }


def _open_loop(runs: Sequence[dict[str, Any]]) -> str | None:
    """What the open-loop column of the runs is: at half rate, at `--rate`, or none."""
    if any(run.get("half_rate") for run in runs):
        return "at half rate"
    rates = {run.get("offered_rate") for run in runs if run.get("at_rate")}
    return f"at {rates.pop()}/s" if len(rates) == 1 else None


def _per_process(runs: Sequence[dict[str, Any]], open_loop: bool) -> dict[str, list[float]]:
    """Each process's CPU ms per order in each run (closed loop, or its open-loop run: at half
    rate, or at `--rate`)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        source = (run.get("half_rate") or run.get("at_rate")) if open_loop else run
        by_process = (source or {}).get("cpu_ms_per_order")
        if not isinstance(by_process, dict):
            continue
        for name, ms in by_process.items():
            if isinstance(ms, int | float):
                values.setdefault(name, []).append(ms)
    return values


def processes(a: Version, b: Version) -> dict[str, dict[str, float | None]]:
    """Where an order's CPU went in each version: per process (postgres by the client it
    serves), the median over the runs of its ms per order, closed loop and in the open loop (at
    half rate, or at `--rate`; the `*_open_loop` columns); the dearest in A first. What `bench
    orders` reports of each run, gathered for the window."""

    def median(values: dict[str, list[float]], name: str) -> float | None:
        return round(statistics.median(values[name]), 3) if values.get(name) else None

    columns = {
        "a": _per_process(a.runs, open_loop=False),
        "b": _per_process(b.runs, open_loop=False),
        "a_open_loop": _per_process(a.runs, open_loop=True),
        "b_open_loop": _per_process(b.runs, open_loop=True),
    }
    names = {name for values in columns.values() for name in values}
    table = {
        name: {column: median(values, name) for column, values in columns.items()} for name in names
    }
    return dict(sorted(table.items(), key=lambda kv: (-(kv[1]["a"] or 0), kv[0])))


async def prepare_databases(versions: Sequence[Version]) -> None:
    for v in versions:
        await _create_database(_database_of(v))


def stop_platforms(root: Path) -> None:
    """The checkout's own platform, and any other, down before the window starts."""
    layout = supervise.Layout(root)
    supervise.stop(layout)
    supervise.stop_foreign(layout)
