"""Fault injection on the bus, with real processes, the real broker and the real database.

Each test runs two processes of the test service (tests/support/app.py): a *producer*, whose
outbox the test fills directly with `selfcheck.pinged` events through a UnitOfWork (its relay
publishes them), and a *consumer*, which records one `effects` row per handled ping with no
unique key, so a duplicate effect would be a second row. The producer also has a queue of its
own (the test service consumes pings); only the consumer's effects are looked at.

Then something is killed at the worst moment, and the test checks docs/DESIGN.md §5.6 from outside:
every committed event is published (its row has left the outbox) and has exactly one effect
(`count(*) == count(DISTINCT event_id) == N`) once things are running again.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import pytest

from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.db import create_pool
from eventshop.platform.settings import PlatformSettings
from tests.e2e.conftest import Broker, ServiceFactory, ServiceProcess, queue_depth
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


# -- what the tests do and look at -----------------------------------------------------------------
async def write_pings(
    settings: PlatformSettings,
    producer: ServiceProcess,
    n: int,
    *,
    first_seq: int = 0,
    note: str | None = None,
    slow_every: int = 0,
) -> list[uuid.UUID]:
    """Commit `n` pings into the producer's outbox in one transaction; their event ids."""
    pool = await create_pool(settings.database_url, producer.schema, max_size=2)
    try:
        async with UnitOfWork.begin(pool, service=producer.name) as uow:
            ids = []
            for seq in range(first_seq, first_seq + n):
                slow = note == "slow" or (slow_every and seq % slow_every == 0)
                ping = Pinged(seq=seq, note="slow" if slow else (note or ""))
                ids.append(uow.emit(ping, aggregate_id=f"ping-{seq}").event_id)
    finally:
        await pool.close()
    return ids


async def effects(db: asyncpg.Connection, svc: ServiceProcess) -> tuple[int, int]:
    """(rows, distinct event ids) in the service's effects table; (0, 0) before it exists."""
    try:
        row = await db.fetchrow(
            f'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM "{svc.schema}".effects'
        )
    except asyncpg.UndefinedTableError:
        return 0, 0
    assert row is not None
    return int(row["n"]), int(row["d"])


async def effect_ids(db: asyncpg.Connection, svc: ServiceProcess) -> set[uuid.UUID]:
    return {r["event_id"] for r in await db.fetch(f'SELECT event_id FROM "{svc.schema}".effects')}


async def unsent_pings(db: asyncpg.Connection, svc: ServiceProcess) -> int:
    return int(
        await db.fetchval(
            f"SELECT count(*) FROM \"{svc.schema}\".outbox WHERE event_type = 'selfcheck.pinged'"
        )
    )


async def ready_in(settings: PlatformSettings, svc: ServiceProcess) -> tuple[int, int] | None:
    """(messages ready, consumers) of the service's queue, now."""
    return await queue_depth(settings.amqp_url, svc.name)


SENTINEL_SEQ = 1_000_000


async def all_exactly_once(
    settings: PlatformSettings,
    db: asyncpg.Connection,
    producer: ServiceProcess,
    consumer: ServiceProcess,
    ids: list[uuid.UUID],
    *,
    within: float,
) -> None:
    """Every ping handled by the consumer exactly once, with nothing still to come.

    Once every ping has an effect, one more ping (a sentinel) goes through the producer's
    outbox; the queue and the consumer's batches are FIFO, so when its effect is committed every
    copy that was in the queue before it (redeliveries, duplicates) has been handled too.
    """
    n = len(ids)
    deadline = time.monotonic() + within
    await eventually(
        lambda: effects(db, consumer),
        lambda v: v[1] >= n,
        timeout=within,
        interval=0.1,
        what=f"{n} distinct effects in {consumer.name}",
    )
    await eventually(
        lambda: unsent_pings(db, producer),
        lambda v: v == 0,
        timeout=max(5.0, deadline - time.monotonic()),
        interval=0.1,
        what=f"every ping in the outbox of {producer.name} marked sent",
    )
    [sentinel] = await write_pings(settings, producer, 1, first_seq=SENTINEL_SEQ)
    await eventually(
        lambda: effect_ids(db, consumer),
        lambda got: sentinel in got,
        timeout=max(10.0, deadline - time.monotonic()),
        interval=0.1,
        what=f"the sentinel ping handled by {consumer.name}",
    )
    assert await effects(db, consumer) == (n + 1, n + 1), "an effect is missing or happened twice"
    assert await effect_ids(db, consumer) == {*ids, sentinel}
    assert await unsent_pings(db, producer) == 0


# -- 1. the relay killed between commit and publish, and between publish and mark-sent -------------
N_RELAY = 50


async def test_relay_killed_before_publish_loses_nothing(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    consumer = await services("cons").started()
    producer = await services("prod").started(fault="relay.before_publish")

    ids = await write_pings(settings, producer, N_RELAY)
    # the relay saw the committed rows and the process died before publishing any of them
    assert await producer.exited(15) == 137
    assert await unsent_pings(db, producer) == N_RELAY
    assert await effects(db, consumer) == (0, 0)

    await producer.started()  # no fault: the new relay publishes what the dead one left
    await all_exactly_once(settings, db, producer, consumer, ids, within=30)


async def test_relay_killed_after_publish_duplicate_is_absorbed(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    consumer = await services("cons").started()
    producer = await services("prod").started(fault="relay.after_publish")

    ids = await write_pings(settings, producer, N_RELAY)
    # published and confirmed, then the process died before marking the rows sent
    assert await producer.exited(15) == 137
    assert await unsent_pings(db, producer) == N_RELAY
    await eventually(  # the first copies
        lambda: effects(db, consumer),
        lambda v: v == (N_RELAY, N_RELAY),
        timeout=30,
        interval=0.1,
        what=f"{N_RELAY} effects of the first copies",
    )

    # the consumer is stopped so that the duplicates the restarted relay publishes can be counted
    consumer.signal(signal.SIGTERM)
    assert await consumer.exited(15) == 0
    assert await ready_in(settings, consumer) == (0, 0)
    await producer.started()
    await eventually(
        lambda: unsent_pings(db, producer),
        lambda v: v == 0,
        timeout=30,
        interval=0.1,
        what="every ping in the producer's outbox marked sent",
    )
    assert await ready_in(settings, consumer) == (N_RELAY, 0), "the duplicates were not published"

    await consumer.started()  # the duplicates are delivered, and the inbox absorbs them
    await all_exactly_once(settings, db, producer, consumer, ids, within=30)
    assert await db.fetchval(f'SELECT count(*) FROM "{consumer.schema}".inbox') == N_RELAY + 1


# -- 2. the broker SIGKILLed with events in flight -------------------------------------------------
N_BEFORE_KILL, N_DURING_OUTAGE = 900, 100
#: with the broker back, the consumer's effects never stand still longer than this (aio-pika
#: reconnects every 5 s)
STALL_S = 30
#: everything handled this long after the kill
RECOVERY_S = 120


async def test_broker_killed_with_events_in_flight(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection, broker: Broker
) -> None:
    consumer = await services("cons").started()
    producer = await services("prod").started()

    # every 10th ping is slow: the consumer needs several seconds for them
    ids = await write_pings(settings, producer, N_BEFORE_KILL, slow_every=10)
    await eventually(  # kill the broker with the consumer well into the stream
        lambda: effects(db, consumer),
        lambda v: v[0] >= 100,
        timeout=30,
        interval=0.1,
        what="the consumer through its first 100 pings",
    )
    killed_at = time.monotonic()
    try:
        await asyncio.to_thread(broker.kill9)
        at_kill = await effects(db, consumer)
        assert at_kill[0] < N_BEFORE_KILL, "all handled before the kill: nothing was in flight"
        # committed while the broker is down: the relay must publish them once it is back
        ids += await write_pings(
            settings, producer, N_DURING_OUTAGE, first_seq=N_BEFORE_KILL, slow_every=10
        )
    finally:
        await asyncio.to_thread(broker.start)
    down_s = time.monotonic() - killed_at

    # nobody restarts the services: they must reconnect and resume by themselves. The queue's
    # consumer count is no sign of it (a quorum queue recovered from its log may list the dead
    # connection's consumer for a while), so progress is: the effects keep growing.
    await consumer_progresses(db, consumer, len(ids), stall_s=STALL_S, within=RECOVERY_S)
    await all_exactly_once(
        settings,
        db,
        producer,
        consumer,
        ids,
        within=max(10.0, RECOVERY_S - (time.monotonic() - killed_at)),
    )
    assert consumer.running and producer.running
    await consumer.ready(10)
    await producer.ready(10)
    print(
        f"effects at the kill: {at_kill[0]}; broker down {down_s:.1f} s;"
        f" all {len(ids)} effects {time.monotonic() - killed_at:.1f} s after the kill"
    )


async def consumer_progresses(
    db: asyncpg.Connection, consumer: ServiceProcess, n: int, *, stall_s: float, within: float
) -> None:
    """Wait for `n` distinct effects; fail as soon as they stop growing for `stall_s`."""
    began = last_change = time.monotonic()
    last = await effects(db, consumer)
    while last[1] < n:
        await asyncio.sleep(0.2)
        now = await effects(db, consumer)
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s or time.monotonic() - began > within:
            pytest.fail(
                f"{consumer.name} stuck at {last[1]} of {n} effects for"
                f" {time.monotonic() - last_change:.0f} s with the broker up; its queue:"
                f" {await queue_depth(consumer.settings.amqp_url, consumer.name)} (ready,"
                f" consumers); its /health/ready: {await consumer.health()}"
            )


# -- 3. a consumer killed in the middle of a batch -------------------------------------------------
N_SLOW = 120
PREFETCH = "20"  # batches of 20 slow pings, about 1 s each, so a kill lands inside one


async def slow_pings_under_way(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> tuple[ServiceProcess, ServiceProcess, list[uuid.UUID]]:
    """A consumer (batches of PREFETCH slow pings) and a producer, N_SLOW pings written, and
    the consumer through its first batch: the moment to interrupt it."""
    consumer = await services("cons", eventshop_prefetch=PREFETCH).started()
    producer = await services("prod").started()
    ids = await write_pings(settings, producer, N_SLOW, note="slow")
    await eventually(
        lambda: effects(db, consumer),
        lambda v: v[0] >= int(PREFETCH),
        timeout=30,
        interval=0.1,
        what="the consumer through its first batch",
    )
    return consumer, producer, ids


async def test_consumer_killed_mid_batch(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    consumer, producer, ids = await slow_pings_under_way(services, settings, db)
    assert await consumer.kill9() == -signal.SIGKILL
    at_kill = await effects(db, consumer)
    assert 0 < at_kill[0] < N_SLOW, at_kill
    assert at_kill[0] == at_kill[1]

    await consumer.started()
    await all_exactly_once(settings, db, producer, consumer, ids, within=60)


async def test_consumer_killed_after_commit_before_ack(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    """The worst moment for a consumer: effects committed, the ack never sent (a fault point)."""
    consumer = await services("cons").started(fault="consumer.before_ack")
    producer = await services("prod").started()

    ids = await write_pings(settings, producer, N_RELAY)
    assert await consumer.exited(15) == 137
    committed = await effects(db, consumer)
    assert committed[0] > 0 and committed[0] == committed[1], committed
    # nothing was acknowledged: every delivery is back in the queue, the committed ones included
    await eventually(
        lambda: ready_in(settings, consumer),
        lambda q: q == (N_RELAY, 0),
        timeout=15,
        interval=0.1,
        what="all pings back in the dead consumer's queue",
    )

    await consumer.started()
    await all_exactly_once(settings, db, producer, consumer, ids, within=30)


# -- 4. graceful stop ------------------------------------------------------------------------------
async def test_consumer_sigterm_mid_run_stops_cleanly(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    consumer, producer, ids = await slow_pings_under_way(services, settings, db)
    began = time.monotonic()
    consumer.signal(signal.SIGTERM)
    assert await consumer.exited(10) == 0, consumer.log_tail()
    took = time.monotonic() - began
    assert took < 5, f"graceful stop took {took:.1f} s"
    at_stop = await effects(db, consumer)
    assert at_stop[0] < N_SLOW, "all handled before the stop: it was not mid-run"
    assert at_stop[0] == at_stop[1]
    # what it had not handled went back to the queue, nothing is held by a consumer
    ready = await ready_in(settings, consumer)
    assert ready is not None and ready[1] == 0

    await consumer.started()
    await all_exactly_once(settings, db, producer, consumer, ids, within=60)
