"""Delivery through the real bus: outbox -> relay -> RabbitMQ -> consumer -> inbox + effect.

Every test builds its own BusNodes (random service names, so random queues; random schemas)
and waits for observable outcomes with a deadline, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from functools import partial
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
import pytest

from eventshop.chaos.proxy import FaultProxy, upstream_of, via_proxy
from eventshop.contracts import Envelope, new_envelope
from eventshop.contracts.selfcheck import Pinged, Ponged
from eventshop.platform.bus import Subscription, UnitOfWork, inbox
from eventshop.platform.bus.consumer import Consumer
from eventshop.platform.bus.outbox import COPY_FROM, OUTBOX_COLUMNS, write_outbox
from eventshop.platform.bus.received import Received
from eventshop.platform.bus.relay import OutboxRelay
from eventshop.platform.bus.topology import declare_service_queues
from eventshop.platform.bus.types import ConsumerStats
from eventshop.platform.bus.window import Item, WindowRunner
from eventshop.platform.bus.wire import encode_body, message_from_envelope
from eventshop.platform.observability.metrics import EventMetrics
from eventshop.platform.observability.tracing import trace_id_of
from eventshop.platform.settings import PlatformSettings
from tests.integration.helpers import (
    PINGED,
    PONGED,
    Bus,
    commit_pings,
    consumer_of,
    effects_of,
    fetch,
    fetchval,
    ping,
    record_effect,
)
from tests.support.polling import eventually
from tests.support.services import statements_run

pytestmark = pytest.mark.integration


# -- 1. the round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_context", [True, False], ids=["caused-traced", "root-event"])
async def test_round_trip_keeps_every_envelope_field_and_amqp_property(
    bus: Bus, with_context: bool
) -> None:
    received: list[tuple[Envelope, Pinged]] = []

    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        await record_effect(uow, env, payload)
        received.append((env, payload))
        uow.emit(Ponged(seq=payload.seq), aggregate_id=env.aggregate_id)

    consumer, cpool = await bus.node({PINGED: on_ping})
    producer, ppool = await bus.node()
    tap = await bus.tap(PINGED, PONGED)

    context = {}
    if with_context:
        context = {
            "correlation_id": f"req-{uuid.uuid4()}",
            "causation_id": f"cmd-{uuid.uuid4()}",
            "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        }
    async with UnitOfWork.begin(ppool, service=producer.service, **context) as uow:
        sent = uow.emit(Pinged(seq=7, note="round trip"), aggregate_id="order-42")

    await eventually(lambda: effects_of(cpool, sent.event_id), 1)

    # the consumer's handler got the envelope exactly as the producer emitted it
    [(got, payload)] = received
    for name in Envelope.model_fields:
        assert getattr(got, name) == getattr(sent, name), name
    assert got == sent
    assert got.occurred_at.utcoffset() is not None
    assert payload == Pinged(seq=7, note="round trip")
    if with_context:
        assert (got.correlation_id, got.causation_id, got.traceparent) == (
            context["correlation_id"],
            context["causation_id"],
            context["traceparent"],
        )
    else:  # a unit of work started without a request id gets a correlation id of its own
        assert got.correlation_id and got.correlation_id == sent.correlation_id
        assert got.causation_id is None and got.traceparent is None

    # ... and on the wire the AMQP properties repeat the envelope (docs/DESIGN.md §4.2)
    [msg] = await eventually(lambda: tap.by_id(str(sent.event_id)), lambda ms: len(ms) == 1)
    assert msg.message_id == str(sent.event_id)
    assert msg.type == PINGED
    assert msg.routing_key == PINGED
    assert msg.correlation_id == sent.correlation_id
    assert msg.timestamp == sent.occurred_at.replace(microsecond=0)  # AMQP has whole seconds
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.content_type == "application/json"
    assert msg.app_id == producer.service
    expected_headers: dict[str, object] = {"schema_version": 2}
    headers = dict(msg.headers or {})
    if with_context:
        expected_headers["causation_id"] = context["causation_id"]
        # the same trace; with tracing on, the parent is the relay's publish span
        assert trace_id_of(str(headers.pop("traceparent"))) == trace_id_of(context["traceparent"])
    assert headers == expected_headers
    assert Envelope.model_validate_json(msg.body) == sent

    # the outbox row moves to outbox_sent, once
    # (the relay moves it after the confirm, which may come after the delivery)
    [row] = await eventually(
        lambda: fetch(ppool, "SELECT * FROM outbox_sent"), lambda rows: len(rows) == 1
    )
    assert row["event_id"] == sent.event_id and row["attempts"] == 1
    assert row["sent_at"] is not None and row["body"] == encode_body(sent)
    assert await fetchval(ppool, "SELECT count(*) FROM outbox") == 0

    # the next hop keeps the correlation, is caused by the ping and carries its trace context
    pongs = await eventually(
        lambda: [m for m in tap.messages if m.type == PONGED], lambda ms: len(ms) == 1
    )
    pong = Envelope.model_validate_json(pongs[0].body)
    assert pong.correlation_id == sent.correlation_id == pongs[0].correlation_id
    assert pong.causation_id == str(sent.event_id) == pongs[0].headers["causation_id"]
    assert trace_id_of(pong.traceparent) == trace_id_of(sent.traceparent)  # one trace
    assert (pong.traceparent is None) == (sent.traceparent is None)
    assert pong.aggregate_id == sent.aggregate_id
    assert pongs[0].app_id == consumer.service


async def test_a_v1_event_reaches_the_handler_upcast_to_v2(bus: Bus) -> None:
    received: list[tuple[Envelope, Pinged]] = []

    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        await record_effect(uow, env, payload)
        received.append((env, payload))

    _, cpool = await bus.node({PINGED: on_ping})
    old = new_envelope(PINGED, 1, "agg-v1", {"number": 41})
    await (await bus.publisher()).publish(PINGED, message_from_envelope(old))

    await eventually(lambda: effects_of(cpool, old.event_id), 1)
    [(env, payload)] = received
    assert payload == Pinged(seq=41, note="upcast from v1")
    assert env.schema_version == 2 and env.payload == {"seq": 41, "note": "upcast from v1"}
    assert env.event_id == old.event_id and env.correlation_id == old.correlation_id


# -- 2. a rolled-back transaction publishes nothing -----------------------------------------------


@pytest.mark.parametrize("flushed", [True, False], ids=["written-then-rolled-back", "pending"])
async def test_rolled_back_unit_of_work_publishes_nothing(bus: Bus, flushed: bool) -> None:
    _, cpool = await bus.node({PINGED: record_effect})
    producer, ppool = await bus.node()
    tap = await bus.tap(PINGED)

    with pytest.raises(RuntimeError, match="business rule says no"):
        async with UnitOfWork.begin(ppool, service=producer.service) as uow:
            doomed = uow.emit(Pinged(seq=1), aggregate_id="doomed")
            if flushed:  # the row is in the outbox, inside the transaction that will roll back
                await uow.flush()
                assert await uow.conn.fetchval("SELECT count(*) FROM outbox") == 1
            raise RuntimeError("business rule says no")
    assert await fetchval(ppool, "SELECT count(*) FROM outbox") == 0

    # a committed event afterwards arrives: the consumer was live all along
    [after] = await commit_pings(ppool, producer.service, [Pinged(seq=2)])
    await eventually(lambda: effects_of(cpool, after.event_id), 1)
    assert await effects_of(cpool, doomed.event_id) == 0
    assert await fetchval(cpool, "SELECT count(*) FROM effects") == 1
    assert [m.message_id for m in tap.messages] == [str(after.event_id)]
    await eventually(lambda: fetchval(ppool, "SELECT count(*) FROM outbox_sent"), 1)
    assert await fetchval(ppool, "SELECT count(*) FROM outbox") == 0


# -- 3. duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize("copies", [2, 100])
async def test_the_same_event_delivered_many_times_has_exactly_one_effect(
    bus: Bus, copies: int
) -> None:
    consumer, cpool = await bus.node({PINGED: record_effect})
    producer, _ = await bus.node()
    assert producer.publisher is not None
    env = ping(1)
    message = message_from_envelope(env)
    for _ in range(copies):
        await producer.publisher.publish(PINGED, message)

    stats = consumer_of(consumer).stats
    await eventually(lambda: stats.duplicates, copies - 1)  # every copy is accounted for
    await eventually(lambda: effects_of(cpool, env.event_id), 1)
    assert await fetchval(cpool, "SELECT count(*) FROM effects") == 1
    assert (
        await fetchval(cpool, "SELECT count(*) FROM inbox WHERE event_id = $1", env.event_id) == 1
    )
    assert stats.duplicates == copies - 1
    assert stats.parked == 0 and stats.retried == 0


async def test_stats_count_a_duplicate_as_a_duplicate_not_as_handled(bus: Bus) -> None:
    consumer, cpool = await bus.node({PINGED: record_effect})
    env = ping(1)
    publisher = await bus.publisher()
    for _ in range(5):
        await publisher.publish(PINGED, message_from_envelope(env))
    stats = consumer_of(consumer).stats
    await eventually(lambda: stats.duplicates, 4)
    await eventually(lambda: effects_of(cpool, env.event_id), 1)
    assert (stats.handled, stats.by_type[PINGED]) == (1, 1)


async def test_a_lingering_consumer_handles_a_trickle_in_one_window(bus: Bus) -> None:
    """Events arriving one by one, 20 ms apart, fill one window of a consumer that lingers
    (the archive's way); without lingering each is a window, a transaction, of its own."""
    lingering, lpool = await bus.node({PINGED: record_effect}, linger_s=1.0)
    eager, epool = await bus.node({PINGED: record_effect})
    publisher = await bus.publisher()
    sent = [ping(i) for i in range(5)]
    for env in sent:
        message = message_from_envelope(env)
        for node in (lingering, eager):
            await publisher.publish(consumer_of(node).queues.main, message, to_queue=True)
        await asyncio.sleep(0.02)
    for pool in (lpool, epool):
        await eventually(partial(fetchval, pool, "SELECT count(*) FROM effects"), 5)
    assert consumer_of(lingering).stats.batches == 1
    assert consumer_of(eager).stats.batches > 1  # 5 unless the machine stalls
    assert consumer_of(lingering).stats.handled == 5


# -- 4. the consumer keeps consuming (ADR 0017) ---------------------------------------------------


async def _consumers_on(bus: Bus, queue: str) -> int:
    return (await bus.queue_depth(queue))[1]


async def test_a_consumer_the_broker_cancels_declares_its_queue_again_and_consumes_again(
    bus: Bus,
) -> None:
    """The queue deleted under a running consumer: the broker cancels it. The consumer declares
    its queue and the queue's bindings again and consumes again: an event published afterwards
    is handled. (aio-pika's robust queue re-declared the queue but not its bindings, made on
    another channel, so the event was unroutable.)"""
    node, pool = await bus.node({PINGED: record_effect})
    consumer = consumer_of(node)
    channel = await (await bus.connection()).channel()
    await channel.queue_delete(consumer.queues.main)
    await channel.close()
    await eventually(lambda: _consumers_on(bus, consumer.queues.main), 1, retry_on=(Exception,))
    assert consumer.attached
    env = ping(1)
    publisher = await bus.publisher()
    await publisher.publish(PINGED, message_from_envelope(env))  # routed: the binding is back
    await eventually(lambda: effects_of(pool, env.event_id), 1)


async def test_a_consumer_whose_connection_is_cut_consumes_again_once_and_at_its_prefetch(
    bus: Bus,
) -> None:
    """Every connection to the broker cut (the chaos proxy's reset): aio-pika reconnects and
    re-opens the channel, and the consumer consumes again on it: once, with its prefetch set
    on that channel first (a consumer made before it would be sent the whole queue)."""
    proxy = await FaultProxy(upstream_of(bus.settings.amqp_url, 5672)).start()
    try:
        cut = bus.settings.model_copy(
            update={"amqp_url": via_proxy(bus.settings.amqp_url, proxy.port)}
        )
        node, pool = await bus.node({PINGED: record_effect}, settings=cut)
        consumer = consumer_of(node)
        producer, ppool = await bus.node()
        [first] = await commit_pings(ppool, producer.service, [Pinged(seq=0)])
        await eventually(partial(effects_of, pool, first.event_id), 1)
        assert not consumer.careful  # whole windows from here on
        before = consumer._underlay
        assert proxy.reset() >= 1
        await eventually(lambda: _attached_on_another_channel(consumer, before), True, timeout=60)
        # what the broker knows: one consumer on the queue, at the consumer's prefetch
        assert await asyncio.to_thread(_prefetches, bus.settings, consumer.queues.main) == [
            bus.settings.prefetch
        ]
        sent = await commit_pings(ppool, producer.service, [Pinged(seq=i) for i in range(1, 301)])
        for env in sent:
            await eventually(partial(effects_of, pool, env.event_id), 1)
    finally:
        await proxy.close()


async def test_a_consumer_started_over_a_backlog_takes_whole_windows(bus: Bus) -> None:
    """Events waiting in its queue when it starts: the first fresh one ends the careful start
    and the consumer consumes again at its prefetch. (The channel's reader could hand it the
    first delivery before `basic_consume` had returned: the consumer, not yet knowing its own
    tag, left the careful start without consuming again and stayed at one message at a time,
    each after its linger: the archive took 10 events a second.)"""
    service = bus.service_name()
    queues = Subscription(service, {PINGED: record_effect}, tuple(bus.settings.retry_delays_ms))
    await declare_service_queues(await bus.connection(), bus.settings.exchange, queues.queues)
    bus.delete_at_end(queues.queues)
    sent = [ping(i) for i in range(300)]
    publisher = await bus.publisher()
    assert await publisher.publish_many([(PINGED, message_from_envelope(e)) for e in sent]) == [
        None
    ] * len(sent)

    node, pool = await bus.node({PINGED: record_effect}, service=service, linger_s=0.05)
    consumer = consumer_of(node)
    await eventually(lambda: fetchval(pool, "SELECT count(*) FROM effects"), len(sent))
    assert not consumer.careful
    assert await asyncio.to_thread(_prefetches, bus.settings, queues.queues.main) == [
        bus.settings.prefetch
    ]
    assert consumer.stats.batches <= 10  # whole windows, not a window a message


async def _attached_on_another_channel(consumer: Consumer, before: object) -> bool:
    return consumer.attached and consumer._underlay is not before


def _prefetches(settings: PlatformSettings, queue: str) -> list[int]:
    """The prefetch of each consumer the broker has on `queue` (rabbitmqctl list_consumers)."""
    vhost = unquote(urlsplit(settings.amqp_url).path[1:]) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_consumers", "-p", vhost, "queue_name", "prefetch_count"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    return [int(prefetch) for name, prefetch in rows if name == queue]


# -- 7. the outbox relay --------------------------------------------------------------------------


async def test_events_committed_while_the_relay_is_down_are_published_in_outbox_order(
    bus: Bus,
) -> None:
    _, cpool = await bus.node({PINGED: record_effect})
    # small relay batches, so the backlog takes several passes
    small = bus.settings.model_copy(update={"relay_batch": 64})
    producer, ppool = await bus.node(settings=small, start=False)

    n = 300
    for start in range(0, n, 50):  # several transactions, one aggregate
        await commit_pings(
            ppool,
            producer.service,
            [Pinged(seq=s) for s in range(start, start + 50)],
            aggregate_id="cart-1",
        )
    assert await fetchval(ppool, "SELECT count(*) FROM outbox") == n
    assert await fetchval(cpool, "SELECT count(*) FROM effects") == 0
    outbox_order = [
        r["event_id"] for r in await fetch(ppool, "SELECT event_id FROM outbox ORDER BY id")
    ]

    await producer.start()
    await eventually(lambda: fetchval(cpool, "SELECT count(*) FROM effects"), n)
    seen_order = [
        r["event_id"] for r in await fetch(cpool, "SELECT event_id FROM effects ORDER BY id")
    ]
    assert seen_order == outbox_order
    assert [r["seq"] for r in await fetch(cpool, "SELECT seq FROM effects ORDER BY id")] == list(
        range(n)
    )
    await eventually(lambda: fetchval(ppool, "SELECT count(*) FROM outbox"), 0)
    assert await fetchval(ppool, "SELECT count(*) FROM outbox_sent") == n
    assert producer.relay is not None and producer.relay.published == n


async def test_notify_wakes_the_relay_long_before_its_poll(bus: Bus) -> None:
    _, cpool = await bus.node({PINGED: record_effect})
    sleepy = bus.settings.model_copy(update={"relay_poll_s": 30.0})
    producer, ppool = await bus.node(settings=sleepy)
    relay = producer.relay
    assert relay is not None
    await eventually(lambda: relay.is_leader, True)

    # the first event may go out in the relay's first pass; the next ones only if NOTIFY
    # wakes it from its 30 s wait
    for seq in range(3):
        started = time.monotonic()
        [env] = await commit_pings(ppool, producer.service, [Pinged(seq=seq)])
        await eventually(partial(effects_of, cpool, env.event_id), 1, timeout=5.0)
        assert time.monotonic() - started < 5.0


async def test_the_standby_waiting_longest_takes_the_relay_lock_when_its_leader_goes(
    bus: Bus,
) -> None:
    """A standby queues for the relay lock: when the leader's session ends, the lock is the
    waiting standby's at once, not a process's that came after it (supervisord's restart of a
    killed leader, here a relay started at that moment)."""
    producer, pool = await bus.node()
    leader = producer.relay
    assert leader is not None and producer.publisher is not None
    await eventually(lambda: leader.is_leader, True)
    dsn = bus.settings.database_url

    def relay(app_id: str) -> OutboxRelay:
        assert producer.publisher is not None
        return OutboxRelay(
            pool, producer.publisher, dsn=dsn, schema=producer.schema, app_id=app_id, poll_s=1.0
        )

    standby, latecomer = relay("standby"), relay("latecomer")
    tasks = [asyncio.create_task(standby.run())]
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1"
        waiting += " AND wait_event_type = 'Lock'"
        await eventually(partial(fetchval, pool, waiting, "standby.relay.%"), 1)
        await fetchval(
            pool,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            f"{producer.service}.relay.{os.getpid()}",
        )
        tasks.append(asyncio.create_task(latecomer.run()))  # arrives as the lock is freed
        await eventually(lambda: standby.is_leader, True, timeout=5, what="the standby leads")
        await asyncio.sleep(1.5)  # the latecomer and the old leader have tried meanwhile
        assert standby.is_leader
        assert not latecomer.is_leader and not leader.is_leader
    finally:
        standby.stop()
        latecomer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("count", [1, COPY_FROM - 1, COPY_FROM, 3 * COPY_FROM])
async def test_the_outbox_takes_a_few_events_in_one_insert_and_many_in_one_copy(
    bus: Bus, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Either way the rows hold each envelope as it was emitted, and the one statement
    wakes the relay once (ADR 0020)."""
    producer, ppool = await bus.node(start=False)
    copies: list[str] = []  # asyncpg's query logger does not see a COPY: the call is watched
    real_copy = asyncpg.Connection.copy_records_to_table

    async def copy(conn: asyncpg.Connection, table: str, **kwargs: Any) -> str:
        copies.append(table)
        return str(await real_copy(conn, table, **kwargs))

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", copy)
    envelopes = [
        new_envelope(
            PINGED,
            2,
            f"order-{i}",
            {"seq": i, "note": "é €"},
            correlation_id=f"req-{i}",
            causation_id=None if i % 2 else f"cmd-{i}",
            traceparent=None if i % 3 else f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        )
        for i in range(count)
    ]
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: Any) -> None:
        heard.put_nowait(args[2])

    channel = f"outbox_{producer.schema}"
    async with ppool.acquire() as conn:
        await conn.add_listener(channel, on_notify)
        try:
            async with ppool.acquire() as writer, writer.transaction():
                with statements_run(writer) as ran:
                    await write_outbox(writer, envelopes)
            await asyncio.wait_for(heard.get(), 5)
            await asyncio.sleep(0.2)
            assert heard.empty()  # one statement, one NOTIFY
        finally:
            await conn.remove_listener(channel, on_notify)
    if count >= COPY_FROM:
        assert (copies, ran) == (["outbox"], [])
    else:
        assert copies == [] and len(ran) == 1 and ran[0].lstrip().startswith("INSERT INTO outbox")
    rows = await fetch(ppool, "SELECT * FROM outbox ORDER BY id")
    assert [r["event_id"] for r in rows] == [e.event_id for e in envelopes]  # in emit order
    for row, env in zip(rows, envelopes, strict=True):
        for column in OUTBOX_COLUMNS[1:-1]:
            assert row[column] == getattr(env, column), column
        assert row["body"] == encode_body(env)
        assert Envelope.model_validate_json(row["body"]) == env
        assert row["attempts"] == 0 and row["last_error"] is None


async def test_relay_moves_out_exactly_the_confirmed_rows_whole(bus: Bus) -> None:
    """A confirmed row leaves the outbox for outbox_sent with every value it had; a row the
    broker did not confirm stays in the outbox with its error and its backoff (ADR 0021)."""
    _, cpool = await bus.node({PINGED: record_effect})
    producer, ppool = await bus.node(start=False)
    good = ping(1)
    nobody = f"nobody.listens_{uuid.uuid4().hex[:8]}"
    stray = new_envelope(nobody, 1, "agg-stray", {"anything": True})
    async with ppool.acquire() as conn, conn.transaction():
        await write_outbox(conn, [stray, good])
    await producer.start()

    await eventually(lambda: effects_of(cpool, good.event_id), 1)
    row = await eventually(
        lambda: fetch(ppool, "SELECT * FROM outbox WHERE event_id = $1", stray.event_id),
        lambda rows: rows[0]["attempts"] >= 1,
    )
    # unroutable: not confirmed, so still in the outbox, backed off
    assert row[0]["last_error"]
    assert row[0]["next_attempt_at"] is not None
    [sent] = await fetch(ppool, "SELECT * FROM outbox_sent")
    assert sent["event_id"] == good.event_id and sent["id"] > row[0]["id"]
    for column in OUTBOX_COLUMNS[1:-1]:
        assert sent[column] == getattr(good, column), column
    assert sent["body"] == encode_body(good)
    assert sent["attempts"] == 1 and sent["last_error"] is None
    assert sent["sent_at"] >= sent["created_at"]


async def test_with_no_window_for_sent_rows_the_relay_deletes_exactly_the_confirmed_rows(
    bus: Bus,
) -> None:
    """EVENTSHOP_RETENTION_OUTBOX_SENT_S=0: a confirmed row is deleted, not marked sent; a row
    the broker did not confirm stays, unsent, with its error and its backoff, as it would."""
    _, cpool = await bus.node({PINGED: record_effect})
    none_kept = bus.settings.model_copy(update={"retention_outbox_sent_s": 0.0})
    producer, ppool = await bus.node(settings=none_kept, start=False)
    good = [ping(i) for i in range(3)]
    stray = new_envelope(f"nobody.listens_{uuid.uuid4().hex[:8]}", 1, "agg-stray", {"x": 1})
    async with ppool.acquire() as conn, conn.transaction():
        await write_outbox(conn, [good[0], stray, *good[1:]])
    await producer.start()

    for env in good:
        await eventually(partial(effects_of, cpool, env.event_id), 1)
    [row] = await eventually(
        lambda: fetch(ppool, "SELECT * FROM outbox"),
        lambda rows: len(rows) == 1 and rows[0]["attempts"] >= 1,
        what="only the unconfirmed row left",
    )
    assert row["event_id"] == stray.event_id
    assert row["last_error"] and row["next_attempt_at"] is not None
    assert await fetchval(ppool, "SELECT count(*) FROM outbox_sent") == 0
    assert producer.relay is not None and producer.relay.published == len(good)


async def test_a_window_runs_each_new_event_once_however_often_it_holds_it(bus: Bus) -> None:
    """The inbox's answer decides: an event already handled is a duplicate, an event twice
    in the window runs once; a window of only new events runs every one of them."""
    node, pool = await bus.node(start=False)
    ran: list[uuid.UUID] = []

    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        ran.append(env.event_id)
        await record_effect(uow, env, payload)

    subscription = Subscription(node.service, {PINGED: on_ping})
    stats = ConsumerStats()
    runner = WindowRunner(
        subscription,
        pool=pool,
        handler_timeout_s=5.0,
        stats=stats,
        metrics=EventMetrics(node.service),
    )

    def item(env: Envelope) -> Item:
        return Item(cast(Received, _NoHeaders()), env, Pinged.model_validate(env.payload))

    seen, a, b = ping(1), ping(2), ping(3)
    async with pool.acquire() as conn:
        assert await inbox.record_new(conn, node.service, [seen.event_id]) == {seen.event_id}

    assert await runner.run([item(a), item(seen), item(a), item(b)]) == []
    assert ran == [a.event_id, b.event_id]
    assert (stats.handled, stats.duplicates) == (2, 2)

    c, d = ping(4), ping(5)  # both new, one of them twice
    assert await runner.run([item(c), item(c), item(d)]) == []
    assert ran[2:] == [c.event_id, d.event_id]
    assert (stats.handled, stats.duplicates) == (4, 3)

    fresh = [ping(i) for i in range(6, 10)]
    assert await runner.run([item(e) for e in fresh]) == []
    assert ran[4:] == [e.event_id for e in fresh]
    assert (stats.handled, stats.duplicates) == (8, 3)
    assert await fetchval(pool, "SELECT count(*) FROM effects") == 8


class _NoHeaders:
    """What the window reads of a delivery here: its headers (for a traceparent)."""

    headers: dict[str, Any] = {}
