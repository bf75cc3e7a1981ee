"""What a phase of the bus benchmark measured: its time, and CPU by role and by process.

The CPU of each child process is charged to its role (writer, relay, consumer, publisher);
the broker's beam.smp to "broker"; the postgres backends serving the children, and the
server's auxiliary processes, to "database"; the orchestrator to "bench"; every other process
to "other processes"; and the machine's irq and steal times apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import asyncpg

from eventshop.bench.cpu import CpuSample, postgres_backends, spent

BROKER = "beam.smp"


@dataclass
class Phase:
    name: str
    count: int
    seconds: float
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CpuSnapshot:
    #: role -> pid of the child process playing it
    children: dict[str, int]
    sample: CpuSample

    @classmethod
    def take(cls, children: Mapping[str, int]) -> CpuSnapshot:
        return cls(dict(children), CpuSample.take())

    def since(
        self, before: CpuSnapshot, *, ours: Sequence[int] = (), database: Set[int] = frozenset()
    ) -> dict[str, float]:
        """CPU seconds spent since `before`: per child role, broker, database, and the rest.

        `database` names the postgres processes that count as the benchmark's (its backends
        and the server's auxiliary processes); other postgres backends are "other processes".
        A process that exited in between is missing from `self`: its CPU is not counted.
        """
        by_pid = spent(before.sample, self.sample)
        me = os.getpid()
        out = {role: by_pid.get(pid, ("", 0.0))[1] for role, pid in self.children.items()}
        out["broker"] = sum(t for name, t in by_pid.values() if name == BROKER)
        out["database"] = sum(t for pid, (_, t) in by_pid.items() if pid in database)
        skip = {me, *ours, *database}
        out["bench"] = by_pid.get(me, ("", 0.0))[1]
        out["other processes"] = sum(
            t for pid, (name, t) in by_pid.items() if name != BROKER and pid not in skip
        )
        a, b = before.sample, self.sample

        def d(field: str) -> float:
            return b.machine_time(field) - a.machine_time(field)

        out["kernel irq"] = d("irq") + d("softirq")
        out["steal"] = d("steal")
        out["machine"] = b.machine_busy - a.machine_busy
        out["wall"] = b.at - a.at
        return out


async def database_pids(dsn: str, clients: Sequence[int]) -> set[int]:
    """The postgres backends serving `clients`' connections, and the auxiliary processes.

    WAL writer, checkpointer, background writer and autovacuum do the work of every session,
    mostly of the one writing the most: here, the benchmark's.
    """
    conn = await asyncpg.connect(dsn)
    try:
        owners, auxiliary = await postgres_backends(
            conn, {pid: pid for pid in clients}, urlparse(dsn).port or 5432
        )
    finally:
        await conn.close()
    return set(owners) | auxiliary
