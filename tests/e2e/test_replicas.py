"""The platform with replicas (`eventshop up --replicas inventory=3,payments=3`, ADR 0012), run
as an operator runs it, under the chaos load and its independent checker (eventshop.chaos).

Every replica consumes its service's queue (the broker counts three consumers on each), a few
hundred orders (200; EVENTSHOP_REPLICAS_ORDERS sets more) all end, the invariants hold,
PostgreSQL logged no deadlock in the platform's database and nothing was parked. Then the
process whose outbox relay leads inventory's schema is killed -9 while orders flow: another
replica's relay takes over within seconds, and the checker finds nothing lost and nothing twice.

Real: everything. The platform is this checkout's, started here with the replicas and put back
to one process per service at the end (or stopped, if it was not running before).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aio_pika
import asyncpg
import httpx
import pytest

from eventshop.chaos import check, load
from eventshop.platform.bus.relay import _lock_key
from eventshop.platform.bus.topology import queue_depth
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling import supervise
from eventshop.tooling.invariants import check_invariants
from eventshop.tooling.shopclient import API
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = {"inventory": 3, "payments": 3}
ORDERS = int(os.environ.get("EVENTSHOP_REPLICAS_ORDERS", "200"))
RATE = 15.0


@pytest.fixture(scope="module")
def replicated() -> Iterator[supervise.Layout]:
    layout = supervise.Layout(ROOT)
    was_running = supervise.supervisor_running(layout)
    if not was_running:
        supervise.stop_foreign(layout)
    supervise.start(layout, replicas=REPLICAS)
    state = asyncio.run(supervise.wait_ready(timeout_s=180, replicas=REPLICAS, layout=layout))
    if not all(state.values()):
        pytest.fail(f"platform with replicas not ready: {state}")
    yield layout
    if was_running:  # as the other tests expect it: one process per service
        supervise.start(layout)
        asyncio.run(supervise.wait_ready(timeout_s=180))
    else:
        supervise.stop(layout)


# -- what the test reads from outside ------------------------------------------------------------
async def consumers_on(queue: str) -> int:
    connection = await aio_pika.connect(PlatformSettings().amqp_url, timeout=10)
    try:
        _, consumers = await queue_depth(await connection.channel(), queue)
        return consumers
    finally:
        await connection.close()


def postgres_log() -> Path:
    """The cluster's log file, as pg_lsclusters names it."""
    for line in subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[2] == str(urlparse(PlatformSettings().database_url).port):
            return Path(fields[6])
    pytest.skip("no PostgreSQL log file found (pg_lsclusters)")


def deadlocks_since(log: Path, offset: int) -> list[str]:
    """The "deadlock detected" lines PostgreSQL logged in the platform's database after
    `offset` (other databases on the cluster, the integration tests' own, are not ours)."""
    database = urlparse(PlatformSettings().database_url).path.lstrip("/")
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    pattern = re.compile(rf"@{re.escape(database)} ERROR:\s+deadlock detected")
    return [line for line in text.splitlines() if pattern.search(line)]


async def run_load(orders: int, during: Any = None) -> tuple[dict[str, Any], list[str], int, Any]:
    """The chaos load (its shop, its placements) and its checker's verdict; `during` runs
    beside the placing. Returns the verdict, the order ids, the parked messages it added and
    what `during` returned."""
    settings = PlatformSettings()
    rng = random.Random(f"replicas:{orders}")
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    # the load's calls name paths under the client's base URL, as the chaos command's do
    async with httpx.AsyncClient(base_url=API, timeout=10.0, limits=limits) as client:
        shop = await load.open_shop(client, rng, rate=RATE)
        placements = load.plan(shop, rng, orders)
        parked_before = await check.parked_depth(settings)
        since = datetime.now(UTC)
        started = time.monotonic()
        beside = asyncio.create_task(during(started) if during else asyncio.sleep(0))
        await load.place_all(client, placements, RATE, started)
        outcome = await beside
        await load.ask_again(client, placements)
        db = await asyncpg.connect(settings.database_url)
        try:
            found = await check.verdict(
                db,
                placements,
                [u.user_id for u in shop.users],
                [shop.rare, *shop.skus],
                since=since,
                settle_s=90,
            )
        finally:
            await db.close()
        parked = await check.parked_depth(settings) - parked_before
    ids = sorted({oid for p in placements for oid in p.order_ids})
    return check.to_json(found), ids, parked, outcome


def assert_right(result: dict[str, Any], orders: int) -> None:
    assert result["accepted"] + result["refused"] == orders and result["unanswered"] == 0
    assert (result["lost"], result["duplicated"], result["unexpected"], result["stuck"]) == (
        0,
        0,
        0,
        0,
    ), result["examples"]
    assert result["final"] == result["accepted"]
    assert result["violations"] == {} and result["unsent"] == {}
    assert result["outcomes"].get("CONFIRMED", 0) > 0


# -- the tests ------------------------------------------------------------------------------------
async def test_three_replicas_each_consume_and_a_few_hundred_orders_end_right(
    replicated: supervise.Layout,
) -> None:
    for service, n in REPLICAS.items():
        assert len(supervise.pids_of(replicated, service)) == n
        # every replica's consumer is on the service's one queue
        await eventually(functools.partial(consumers_on, service), n, timeout=60, interval=0.5)
    # payments' charge job: every replica waits on its lock, one of them runs it
    await eventually(job_runners, (3, 1), timeout=30, interval=0.5)
    log = postgres_log()
    offset = log.stat().st_size

    result, ids, parked, _ = await run_load(ORDERS)

    assert_right(result, ORDERS)
    report = await check_invariants(PlatformSettings().database_url, order_ids=ids)
    assert report.ok, report.violations[:20]
    assert parked == 0
    assert deadlocks_since(log, offset) == []
    for service, n in REPLICAS.items():
        assert await consumers_on(service) == n


async def job_runners() -> tuple[int, int]:
    """(payments processes with a connection for the charge job, of which hold its lock)."""
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        row = await db.fetchrow(
            "SELECT count(*) AS waiting, count(l.pid) AS leading FROM pg_stat_activity a"
            " LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted"
            " WHERE a.application_name LIKE 'payments.job.charge_payments.%'"
        )
    finally:
        await db.close()
    assert row is not None
    return int(row["waiting"]), int(row["leading"])


async def relay_leader(schema: str) -> tuple[int, int] | None:
    """(OS pid of the process, backend pid) whose relay holds `schema`'s relay lock: the lock's
    holder in pg_locks, named by its application_name `<service>.relay.<pid>`."""
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        key = _lock_key(schema)
        row = await db.fetchrow(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.classid = (($1::bigint >> 32) & 4294967295)::oid"
            " AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1",
            key,
        )
    finally:
        await db.close()
    if row is None:
        return None
    match = re.fullmatch(rf"{schema}\.relay\.(\d+)", row["application_name"] or "")
    assert match, f"the relay lock's holder does not name its process: {row['application_name']}"
    return int(match[1]), int(row["pid"])


async def test_the_leading_relay_killed_another_replica_takes_over_and_nothing_is_lost(
    replicated: supervise.Layout,
) -> None:
    replicas = supervise.pids_of(replicated, "inventory")
    assert len(replicas) == 3

    async def kill_the_leader(started: float) -> dict[str, float | int]:
        await asyncio.sleep(max(0.0, started + 0.3 * ORDERS / RATE - time.monotonic()))
        leader = await relay_leader("inventory")
        assert leader is not None, "no relay leads inventory"
        pid, backend = leader
        assert pid in replicas, (pid, replicas)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        async def new_leader() -> tuple[int, int] | None:
            found = await relay_leader("inventory")
            return found if found is not None and found[0] != pid else None

        successor = await eventually(
            new_leader, lambda f: f is not None, timeout=30, interval=0.05, what="a new leader"
        )
        assert successor is not None and successor[1] != backend
        return {"killed": pid, "successor": successor[0], "takeover_s": time.monotonic() - killed}

    result, ids, parked, takeover = await run_load(ORDERS, during=kill_the_leader)

    print(f"relay takeover after kill -9 of its leader: {takeover['takeover_s']:.2f} s")
    assert takeover["successor"] in replicas  # a replica that was already running took over
    assert takeover["takeover_s"] < 5.0, takeover
    assert_right(result, ORDERS)
    report = await check_invariants(PlatformSettings().database_url, order_ids=ids)
    assert report.ok, report.violations[:20]
    assert parked == 0
    # supervisord started the killed replica again: three consumers once more
    await eventually(lambda: consumers_on("inventory"), 3, timeout=60, interval=0.5)
