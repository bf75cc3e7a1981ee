"""What the machine, the database and the broker did during the order benchmark.

CPU by process group (each service, the broker, Redis, PostgreSQL split by the client each
backend serves, the benchmark's own client); the database's transaction ids, WAL position and
statistics; the outboxes' backlog; the idle platform's rates; and the queues bound to each
event type on the broker (`rabbitmqctl list_bindings`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import psutil

from eventshop.bench.cpu import CpuSample, by_label, postgres_backends, spent
from eventshop.bench.orders.config import SAGA_STEPS, BenchError
from eventshop.bench.orders.platform import service_of_cmdline
from eventshop.tooling import broker, supervise

BROKER_PROCESSES = ("beam.smp", "erl_child_setup", "epmd", "inet_gethost")


def _label_of(p: psutil.Process, me: int) -> str | None:
    name = p.info["name"]
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return None
    if p.pid == me:
        return "bench client"
    if name in BROKER_PROCESSES:
        return "rabbitmq"
    if name == "postgres" or (cmd and cmd[0].endswith("/postgres")):
        return "postgres"
    if name == "redis-server":
        return "redis"
    service = service_of_cmdline(cmd)
    if service is not None:
        return service
    if supervise.SMTP_SINK_MODULE in cmd:
        return "smtp-sink"
    if any(part.endswith("supervisord") for part in cmd):
        return "supervisord"
    return None


@dataclass
class Snapshot:
    at: float
    cpu: CpuSample
    xid: int
    wal_lsn: int


def cpu_delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU seconds per label between two snapshots (a process born in between counts from 0)."""
    return by_label(spent(a.cpu, b.cpu))


def machine_delta(a: Snapshot, b: Snapshot, which: str = "busy") -> float:
    """The machine's CPU seconds between two snapshots: busy (neither idle nor waiting for
    I/O), or one of its CPU times ("steal", say)."""
    if which == "busy":
        return b.cpu.machine_busy - a.cpu.machine_busy
    return b.cpu.machine_time(which) - a.cpu.machine_time(which)


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    me = os.getpid()
    sample = CpuSample.take(lambda p: _label_of(p, me))
    labels = {pid: label for pid, (label, _) in sample.processes.items()}
    clients = {pid: label for pid, label in labels.items() if label != "postgres"}
    owners, _ = await postgres_backends(conn, clients)
    # the benchmark's own connection is served by a backend too
    owners[int(await conn.fetchval("SELECT pg_backend_pid()"))] = "bench client"
    sample = sample.relabelled(
        {
            pid: f"postgres ({owners.get(pid, 'background')})"
            for pid, label in labels.items()
            if label == "postgres"
        }
    )
    row = await conn.fetchrow(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xid,"
        " pg_current_wal_lsn()::text AS lsn"
    )
    return Snapshot(time.monotonic(), sample, int(row["xid"]), _lsn(row["lsn"]))


@dataclass
class PgStats:
    at: float
    xact_commit: int
    xact_rollback: int
    tup_written: int
    wal_sync: int
    wal_write: int
    wal_fpi: int
    #: schema.table -> rows inserted + updated + deleted
    tables: dict[str, int] = field(default_factory=dict)


async def pg_stats(conn: asyncpg.Connection) -> PgStats:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    db = await conn.fetchrow(
        "SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted AS w"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    wal = await conn.fetchrow("SELECT wal_sync, wal_write, wal_fpi FROM pg_stat_wal")
    tables = await conn.fetch(
        "SELECT schemaname || '.' || relname AS t, n_tup_ins + n_tup_upd + n_tup_del AS w"
        " FROM pg_stat_user_tables"
    )
    return PgStats(
        time.monotonic(),
        int(db["xact_commit"]),
        int(db["xact_rollback"]),
        int(db["w"]),
        int(wal["wal_sync"]),
        int(wal["wal_write"]),
        int(wal["wal_fpi"]),
        {str(r["t"]): int(r["w"]) for r in tables},
    )


async def outbox_backlog(conn: asyncpg.Connection) -> dict[str, int]:
    """Events each service's outbox still holds unsent (the run has settled: none expected)."""
    schemas = await conn.fetch(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = 'outbox' AND table_schema = ANY($1::text[])",
        supervise.SERVICES,
    )
    backlog: dict[str, int] = {}
    for row in schemas:
        schema = str(row["table_schema"])
        n = await conn.fetchval(
            # the schema is one of SERVICES, as information_schema names it
            f'SELECT count(*) FROM "{schema}".outbox'
        )
        if n:
            backlog[schema] = int(n)
    return backlog


def step_name(before: str, after: str) -> str:
    return f"{before} -> {after}"


def saga_step_times(rows: Iterable[tuple[str, str, datetime]]) -> dict[str, list[float]]:
    """Milliseconds between each pair of neighbouring events of `SAGA_STEPS`, over the orders
    (correlation id, event type, occurred at) whose every step is there, i.e. the confirmed
    ones; and from the first to the last (the saga as a whole, the POST and the client's
    observation left out). Each time is the difference of two `occurred_at` of one machine's
    clock (on several hosts, their clocks' skew is in it)."""
    by_order: dict[str, dict[str, datetime]] = {}
    for correlation_id, event_type, occurred_at in rows:
        by_order.setdefault(correlation_id, {})[event_type] = occurred_at
    names = [step_name(a, b) for a, b in itertools.pairwise(SAGA_STEPS)]
    whole = step_name(SAGA_STEPS[0], SAGA_STEPS[-1])
    times: dict[str, list[float]] = {name: [] for name in [*names, whole]}
    for seen in by_order.values():
        if not all(t in seen for t in SAGA_STEPS):
            continue
        at = [seen[t] for t in SAGA_STEPS]
        for name, (a, b) in zip(names, itertools.pairwise(at), strict=True):
            times[name].append((b - a).total_seconds() * 1000)
        times[whole].append((at[-1] - at[0]).total_seconds() * 1000)
    return times


async def saga_steps(
    conn: asyncpg.Connection, correlation_ids: list[str]
) -> dict[str, list[float]]:
    """`saga_step_times` of the run's orders, from the archive (every event, with the time its
    producer's transaction made it)."""
    rows = await conn.fetch(
        "SELECT correlation_id, event_type, occurred_at FROM archive.archived_events"
        " WHERE correlation_id = ANY($1::text[]) AND event_type = ANY($2::text[])",
        correlation_ids,
        list(SAGA_STEPS),
    )
    return saga_step_times((r["correlation_id"], r["event_type"], r["occurred_at"]) for r in rows)


@dataclass
class Idle:
    """The platform doing nothing (pollers, timers): per second."""

    cpu_s: dict[str, float]
    machine_busy_s: float
    xact_per_s: float
    xid_per_s: float


async def measure_idle(conn: asyncpg.Connection, seconds: float) -> Idle:
    s0, p0 = await snapshot(conn), await pg_stats(conn)
    await asyncio.sleep(seconds)
    s1, p1 = await snapshot(conn), await pg_stats(conn)
    dt = s1.at - s0.at
    return Idle(
        {k: v / dt for k, v in cpu_delta(s0, s1).items()},
        machine_delta(s0, s1) / dt,
        (p1.xact_commit - p0.xact_commit) / (p1.at - p0.at),
        (s1.xid - s0.xid) / dt,
    )


def _topic_matches(pattern: str, key: str) -> bool:
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def read_bindings(exchange: str) -> list[tuple[str, str]]:
    """(queue, binding key) of every queue bound to the platform's exchange."""
    # the machine's broker, or a running node of the cluster (EVENTSHOP_BROKER=cluster)
    out = broker._ctl(
        "list_bindings", "-p", broker.VHOST, "source_name", "destination_name",
        "destination_kind", "routing_key",
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"rabbitmqctl list_bindings: {out.stderr.strip()}")
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.count("\t") == 3]
    return [(r[1], r[3]) for r in rows if r[0] == exchange and r[2] == "queue"]


def deliveries_of(event_type: str, bindings: Sequence[tuple[str, str]], skip: str) -> int:
    """Queues one event of this type is delivered to (a queue bound twice gets it once)."""
    return len({q for q, key in bindings if q != skip and _topic_matches(key, event_type)})
