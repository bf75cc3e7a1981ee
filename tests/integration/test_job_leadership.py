"""A service's background job runs in one of its processes at a time (platform/leadership.py,
ADR 0012). Two job runners, as two replicas would have, on one schema of the real PostgreSQL:
only one runs the job; when the leader's lock connection is killed (`pg_terminate_backend`) or
the leader itself goes away, the other takes over within seconds and the old one's job is
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventshop.platform.leadership import JobLeader, lock_key
from eventshop.platform.settings import PlatformSettings
from tests.support.polling import eventually

POLL_S = 0.5


class Replica:
    """One process's runner of the job; `running` is true while its job is in progress."""

    def __init__(self, name: str, schema: str, settings: PlatformSettings) -> None:
        self.name = name
        self.running = False
        self.started = 0
        self.leader = JobLeader(
            self.job,
            name="time_out_orders",
            dsn=settings.database_url,
            schema=schema,
            service=name,
            poll_s=POLL_S,
        )
        self.task: asyncio.Task[None] | None = None

    async def job(self) -> None:
        self.running = True
        self.started += 1
        try:
            await asyncio.Event().wait()  # a job loops for ever; only cancellation ends it
        finally:
            self.running = False

    def start(self) -> None:
        self.task = asyncio.create_task(self.leader.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def replicas(settings: PlatformSettings) -> AsyncIterator[tuple[Replica, Replica]]:
    schema = f"orders_{uuid.uuid4().hex[:8]}"
    one, two = Replica("replica-1", schema, settings), Replica("replica-2", schema, settings)
    one.start()
    two.start()
    try:
        yield one, two
    finally:
        await one.stop()
        await two.stop()


async def holder_of(settings: PlatformSettings, key: int) -> int | None:
    """The backend pid holding the advisory lock `key` (a bigint key is split in two halves)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = (($1::bigint >> 32) & 4294967295)::oid"
            " AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1",
            key,
        )
        return pid
    finally:
        await conn.close()


async def one_leads(one: Replica, two: Replica) -> Replica:
    await eventually(lambda: one.running or two.running, True, timeout=10, what="a leader")
    leader, standby = (one, two) if one.running else (two, one)
    # a few of the standby's polls: it still waits
    await asyncio.sleep(3 * POLL_S)
    assert leader.running and not standby.running
    assert not standby.leader.is_leader and standby.started == 0
    return leader


async def test_only_one_replica_runs_the_job(replicas: tuple[Replica, Replica]) -> None:
    one, two = replicas
    await one_leads(one, two)
    assert one.started + two.started == 1


async def test_the_other_takes_over_within_seconds_when_the_leaders_connection_is_killed(
    replicas: tuple[Replica, Replica], settings: PlatformSettings
) -> None:
    one, two = replicas
    leader = await one_leads(one, two)
    standby = two if leader is one else one
    key = lock_key(leader.leader._schema, "time_out_orders")
    backend = await holder_of(settings, key)
    assert backend is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        killed = time.monotonic()
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", backend)
    finally:
        await conn.close()
    await eventually(lambda: standby.running, True, timeout=10, interval=0.05, what="takeover")
    took_over_s = time.monotonic() - killed
    assert took_over_s < 3 * POLL_S + 1, took_over_s
    # the old leader lost its lock with its connection: its job is cancelled
    await eventually(lambda: leader.running, False, timeout=5, interval=0.05)
    await asyncio.sleep(3 * POLL_S)
    assert standby.running and not leader.running
    # and the lock is the new leader's
    assert await holder_of(settings, key) not in (None, backend)


async def test_the_other_takes_over_when_the_leader_goes_away(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    leader = await one_leads(one, two)
    standby = two if leader is one else one
    gone = time.monotonic()
    await leader.stop()  # what a process's end does to its session: the lock goes with it
    await eventually(lambda: standby.running, True, timeout=10, interval=0.05, what="takeover")
    assert time.monotonic() - gone < 3 * POLL_S + 1


async def test_a_job_that_crashes_is_run_again(settings: PlatformSettings) -> None:
    """A job's crash lets go of the lead; a poll later it runs again (here or in a standby)."""
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("a bug in the job's first pass")
        await asyncio.Event().wait()

    leader = JobLeader(
        flaky,
        name="charge_payments",
        dsn=settings.database_url,
        schema=f"payments_{uuid.uuid4().hex[:8]}",
        service="payments",
        poll_s=POLL_S,
    )
    task = asyncio.create_task(leader.run())
    try:
        await eventually(lambda: len(runs), 2, timeout=10, interval=0.05, what="a second run")
        assert leader.is_leader and leader.terms == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
