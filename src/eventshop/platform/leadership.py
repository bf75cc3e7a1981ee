"""Background jobs run once per service, not once per process (ADR 0012).

A service's jobs (orders' timeout scanner and projections, payments' charge job) are loops over
its schema. With replicas, every process starts them, but only the one holding the job's
PostgreSQL advisory lock, a session lock on a connection of its own, runs it; the others try
again every `job_leader_poll_s`. The lock lives as long as that connection: when the leader
dies, PostgreSQL ends its session and frees the lock, and a standby takes the job within a
poll. When the leader's connection drops while it lives on (a restart of the server, a
`pg_terminate_backend`), the leader notices within a poll too and cancels its job, so two
processes run a job together at most for that moment. The jobs were written for that already:
their work is claimed row by row (`FOR UPDATE SKIP LOCKED`, leases, positions under a lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

#: how long the leader waits for its connection to answer before it counts the lock as lost
CHECK_TIMEOUT_S = 5.0


def lock_key(schema: str, job: str) -> int:
    """The job's advisory lock key: 64 bits of a hash of (schema, job), like the relay's."""
    digest = hashlib.sha1(f"job:{schema}:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class JobLeader:
    """Runs `job()` while this process holds the (schema, name) lock; waits for it otherwise."""

    def __init__(
        self,
        job: Callable[[], Coroutine[Any, Any, None]],
        *,
        name: str,
        dsn: str,
        schema: str,
        service: str,
        poll_s: float = 1.0,
    ) -> None:
        self._job = job
        self.name = name
        self._dsn = dsn
        self._schema = schema
        self._service = service
        self._poll_s = poll_s
        self.is_leader = False
        #: how many times this process took the lead (a test and a log line read it)
        self.terms = 0

    async def run(self) -> None:
        """Lead or wait, for ever (until cancelled); a lost connection means a lost lead."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    server_settings={
                        # who holds the lock, for an operator reading pg_stat_activity
                        "application_name": f"{self._service}.job.{self.name}.{os.getpid()}"[:63]
                    },
                )
                await self._wait_for_lead(conn)
                await self._lead(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self.is_leader:
                    log.warning("job.lead_lost", job=self.name, error=repr(exc))
                else:
                    log.warning("job.database_unavailable", job=self.name, error=repr(exc))
            except Exception:  # whatever it was, this process must go on leading or waiting
                log.exception("job.leader_crashed", job=self.name)
            finally:
                self.is_leader = False
                if conn is not None:
                    conn.terminate()  # never waits on a dead server; the session ends with it
            await asyncio.sleep(self._poll_s)

    async def _wait_for_lead(self, conn: asyncpg.Connection) -> None:
        key = lock_key(self._schema, self.name)
        while True:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                break
            await asyncio.sleep(self._poll_s)  # polling: PostgreSQL says nothing when it frees
        self.is_leader = True
        self.terms += 1
        log.info("job.leading", job=self.name, schema=self._schema)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Run the job while the lock's connection answers; cancel it as soon as it does not."""
        task = asyncio.create_task(self._job(), name=f"{self._service}.{self.name}")
        try:
            while True:
                # checked twice per poll, so the leader lets go before a standby can take over
                done, _ = await asyncio.wait({task}, timeout=self._poll_s / 2)
                if done:
                    exc = None if task.cancelled() else task.exception()
                    if exc is not None:
                        log.error("job.crashed", job=self.name, error=repr(exc))
                    return  # lead again (or let another process) after a poll
                if conn.is_closed():
                    raise ConnectionError("the job's lock connection closed")
                await asyncio.wait_for(conn.fetchval("SELECT 1"), CHECK_TIMEOUT_S)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
