"""CPU accounting shared by the benchmarks: what each process, and the machine, spent.

A `CpuSample` reads, with psutil, the CPU seconds (user + system) of every process the caller
labels, and the machine's CPU times; `spent` is what each process spent between two samples.
`postgres_backends` finds which PostgreSQL backends serve which client processes (a backend
is matched to its client by the client's local TCP port, pg_stat_activity's client_port), so
that the database's CPU can be charged to whoever drives it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg
import psutil

T = TypeVar("T")
#: a process -> its label in a sample, None to leave it out; `p.info` holds its "name"
Label = Callable[[psutil.Process], str | None]


def by_name(p: psutil.Process) -> str | None:
    """Every process, labelled by its name."""
    return p.info["name"] or "?"


@dataclass(frozen=True)
class CpuSample:
    at: float
    #: pid -> (label, CPU seconds so far)
    processes: dict[int, tuple[str, float]]
    machine: Any  # psutil.cpu_times(): user, system, idle, iowait, irq, softirq, steal, ...

    @classmethod
    def take(cls, label: Label = by_name) -> CpuSample:
        at = time.monotonic()
        processes: dict[int, tuple[str, float]] = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            t = p.info["cpu_times"]
            name = label(p) if t is not None else None
            if name is not None:
                processes[p.pid] = (name, float(t.user + t.system))
        return cls(at, processes, psutil.cpu_times())

    def relabelled(self, labels: Mapping[int, str]) -> CpuSample:
        """The same sample, the processes of `labels` under their new label."""
        processes = {
            pid: (labels.get(pid, label), secs) for pid, (label, secs) in self.processes.items()
        }
        return replace(self, processes=processes)

    def machine_time(self, field: str) -> float:
        """One of the machine's CPU times (0 where this kernel has no such field)."""
        return float(getattr(self.machine, field, 0.0))

    @property
    def machine_busy(self) -> float:
        """The machine's CPU seconds so far, neither idle nor waiting for I/O."""
        return float(sum(self.machine)) - self.machine_time("idle") - self.machine_time("iowait")


def spent(before: CpuSample, after: CpuSample) -> dict[int, tuple[str, float]]:
    """pid -> (label, CPU seconds) each process of `after` spent since `before`.

    A process born in between counts from 0 (so does a pid reused); one that exited in between
    is missing from `after`: its CPU is not counted."""
    out: dict[int, tuple[str, float]] = {}
    for pid, (label, secs) in after.processes.items():
        earlier = before.processes.get(pid)
        start = earlier[1] if earlier is not None and earlier[1] <= secs else 0.0
        out[pid] = (label, secs - start)
    return out


def by_label(spent_by_pid: Mapping[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per label."""
    out: dict[str, float] = {}
    for label, secs in spent_by_pid.values():
        out[label] = out.get(label, 0.0) + secs
    return out


async def postgres_backends(
    conn: asyncpg.Connection, clients: Mapping[int, T], server_port: int = 5432
) -> tuple[dict[int, T], set[int]]:
    """The backends serving `clients`' connections (backend pid -> the client's value), and
    the server's own processes (WAL writer, checkpointer, background writer, autovacuum...)."""
    by_port: dict[int, T] = {}
    for pid, value in clients.items():
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == server_port:
                    by_port[c.laddr.port] = value
    rows = await conn.fetch("SELECT pid, client_port, backend_type FROM pg_stat_activity")
    owners = {int(r["pid"]): by_port[r["client_port"]] for r in rows if r["client_port"] in by_port}
    auxiliary = {int(r["pid"]) for r in rows if r["backend_type"] != "client backend"}
    return owners, auxiliary
