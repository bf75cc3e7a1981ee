"""Failures through the real bus: the retry ladder (delay queues with TTL that dead-letter back),
the parking lot (list / replay / purge), messages parked at once, and the slow path that
isolates one failing event of a batch.

The session's settings give a ladder of [100, 200] ms, so a handler runs at most 3 attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from functools import partial

import aio_pika
import asyncpg
import pytest

from eventshop.contracts import Envelope, new_envelope
from eventshop.contracts.selfcheck import Pinged, Ponged
from eventshop.platform.bus import BatchHandler, BusNode, Delivery, UnitOfWork
from eventshop.platform.bus.parking import purge_parked, replay_parked
from eventshop.platform.bus.wire import encode_body, message_from_envelope
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.integration.helpers import (
    EMITTED,
    PINGED,
    PONGED,
    Bus,
    consumer_of,
    effects_of,
    fetch,
    fetchval,
    parked,
    parked_count,
    ping,
    record_effect,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

LADDER_S = (100 + 200) / 1000  # the session's retry_delays_ms, end to end


@pytest.fixture
async def bus(settings: PlatformSettings, make_schema: SchemaFactory) -> AsyncIterator[Bus]:
    assert settings.retry_delays_ms == [100, 200], "these tests are written for that ladder"
    b = Bus(settings, make_schema)
    try:
        yield b
    finally:
        await b.aclose()


async def publish(bus: Bus, env: Envelope) -> None:
    await (await bus.publisher()).publish(env.event_type, message_from_envelope(env))


# -- 4. the retry ladder --------------------------------------------------------------------------


async def test_a_handler_failing_twice_then_succeeding_has_one_effect_after_the_ladder(
    bus: Bus,
) -> None:
    calls: list[float] = []

    async def flaky(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        calls.append(time.monotonic())
        # fails on the first two deliveries (whatever number of runs a delivery makes)
        if consumer_of(node).stats.retried < 2:
            raise RuntimeError("not yet")
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: flaky})
    env = ping(3)
    await publish(bus, env)

    await eventually(lambda: effects_of(pool, env.event_id), 1)
    stats = consumer_of(node).stats
    assert (stats.retried, stats.parked) == (2, 0)
    # it came back through both delay queues: a lower bound, so it cannot be flaky
    assert calls[-1] - calls[0] >= LADDER_S
    assert await parked_count(node) == 0
    assert await fetchval(pool, "SELECT count(*) FROM effects") == 1


async def test_an_always_failing_handler_is_parked_after_the_last_attempt(bus: Bus) -> None:
    calls: list[float] = []

    async def broken(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        calls.append(time.monotonic())
        raise RuntimeError(f"handler refuses seq={payload.seq}")

    node, pool = await bus.node({PINGED: broken})
    env = ping(5)
    started = time.monotonic()
    await publish(bus, env)

    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert time.monotonic() - started >= LADDER_S
    assert calls[-1] - calls[0] >= LADDER_S
    assert p.event_id == str(env.event_id)
    assert p.event_type == PINGED
    assert p.correlation_id == env.correlation_id
    assert p.attempts == 3 and p.headers["x-attempt"] == 3
    assert "RuntimeError: handler refuses seq=5" in p.error
    assert p.original_routing_key == PINGED
    assert p.first_failure_at is not None and p.parked_at is not None
    assert datetime.fromisoformat(p.first_failure_at) <= datetime.fromisoformat(p.parked_at)
    assert p.headers["x-parked-by"] == node.service
    assert p.headers["schema_version"] == 2  # the original headers travel along
    assert p.body == encode_body(env)
    stats = consumer_of(node).stats
    assert (stats.retried, stats.parked) == (2, 1)
    assert await effects_of(pool, env.event_id) == 0
    assert await fetchval(pool, "SELECT count(*) FROM inbox") == 0


@pytest.mark.parametrize("batch", [False, True], ids=["handler", "batch-handler"])
async def test_a_failing_handler_runs_once_per_attempt(bus: Bus, batch: bool) -> None:
    runs: list[str] = []

    async def broken(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        runs.append(str(env.event_id))
        raise RuntimeError("always")

    async def broken_many(events: Sequence[Delivery]) -> None:
        for uow, env, payload in events:
            await broken(uow, env, payload)

    node, _ = await bus.node({PINGED: BatchHandler(broken_many) if batch else broken})
    await publish(bus, ping(1))
    await eventually(lambda: parked_count(node), 1)
    assert len(runs) == consumer_of(node).queues.max_attempts == 3


async def test_a_handler_timing_out_in_a_query_is_retried_then_parked(
    bus: Bus,
) -> None:
    impatient = bus.settings.model_copy(update={"handler_timeout_s": 0.2})
    stuck: list[str] = []

    async def slow(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        if payload.note == "stuck":
            stuck.append(str(env.event_id))
            await uow.conn.execute("SELECT pg_sleep(2)")
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: slow}, settings=impatient)
    bad, good = ping(1, note="stuck"), ping(2)
    await publish(bus, bad)
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1, timeout=15)
    assert p.event_id == str(bad.event_id) and p.attempts == 3
    assert "TimeoutError" in p.error
    # the consumer (and its database connections) survived the cancelled queries
    await publish(bus, good)
    await eventually(lambda: effects_of(pool, good.event_id), 1)
    assert await effects_of(pool, bad.event_id) == 0


# -- 4. parked at once ----------------------------------------------------------------------------


def _not_json(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    msg = aio_pika.Message(b"{not json", message_id=str(uuid.uuid4()), type=PINGED)
    return PINGED, msg, False, "MalformedEventError: body is not JSON"


def _unknown_version(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    env = new_envelope(PINGED, 99, "agg", {"seq": 1})
    return PINGED, message_from_envelope(env), False, "SchemaVersionError"


def _unknown_type(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    env = new_envelope(f"nobody.knows_{uuid.uuid4().hex[:8]}", 1, "agg", {"x": 1})
    # no queue is bound to an unregistered type: straight to the service queue
    return service, message_from_envelope(env), True, "UnknownEventTypeError"


def _payload_breaks_contract(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    env = new_envelope(PINGED, 2, "agg", {"seq": -1})
    return PINGED, message_from_envelope(env), False, "MalformedEventError"


def _not_an_envelope(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    msg = aio_pika.Message(b'{"event_type": "selfcheck.pinged"}', message_id=str(uuid.uuid4()))
    return PINGED, msg, False, "MalformedEventError: envelope fails its contract"


def _no_handler_here(service: str) -> tuple[str, aio_pika.Message, bool, str]:
    env = new_envelope(PONGED, 1, "agg", Ponged(seq=1).model_dump())
    return service, message_from_envelope(env), True, f"no handler in {service} for {PONGED}"


@pytest.mark.parametrize(
    "make_bad",
    [
        _not_json,
        _unknown_version,
        _unknown_type,
        _payload_breaks_contract,
        _not_an_envelope,
        _no_handler_here,
    ],
)
async def test_a_message_no_retry_can_fix_is_parked_at_once(
    bus: Bus, make_bad: Callable[[str], tuple[str, aio_pika.Message, bool, str]]
) -> None:
    calls: list[Envelope] = []

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        calls.append(env)
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: handler})
    key, message, to_queue, error = make_bad(node.service)
    publisher = await bus.publisher()
    await publisher.publish(key, message, to_queue=to_queue)

    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert p.attempts == 1 and p.headers["x-attempt"] == 1
    assert error in p.error
    assert p.event_id == message.message_id
    assert p.body == message.body
    assert p.original_routing_key == key
    assert calls == []
    stats = consumer_of(node).stats
    assert (stats.retried, stats.parked) == (0, 1)
    # the consumer goes on: a good event after it is handled
    good = ping(9)
    await publish(bus, good)
    await eventually(lambda: effects_of(pool, good.event_id), 1)
    assert [c.event_id for c in calls] == [good.event_id]


async def test_a_v1_event_the_upcaster_cannot_lift_is_parked_not_lost(bus: Bus) -> None:
    node, pool = await bus.node({PINGED: record_effect})
    broken = new_envelope(PINGED, 1, "agg", {})  # v1 without its `number`
    await publish(bus, broken)
    good = ping(2)
    await publish(bus, good)
    await eventually(lambda: effects_of(pool, good.event_id), 1, timeout=3)
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1, timeout=2)
    assert p.event_id == str(broken.event_id)
    assert "MalformedEventError" in p.error


# -- 4. replay and purge --------------------------------------------------------------------------


async def test_a_parked_message_replayed_after_the_fix_is_handled_exactly_once(bus: Bus) -> None:
    fixed = asyncio.Event()
    runs: list[uuid.UUID] = []

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        runs.append(env.event_id)
        if not fixed.is_set() and payload.note == "needs the fix":
            raise RuntimeError("bug in the handler")
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: handler})
    assert node.connection is not None and node.publisher is not None
    victim, bystander = ping(1, note="needs the fix"), ping(2, note="needs the fix")
    await publish(bus, victim)
    await publish(bus, bystander)
    await eventually(lambda: parked_count(node), 2)

    fixed.set()
    queues = consumer_of(node).queues
    replayed = await replay_parked(
        node.connection, node.publisher, queues, where=lambda p: p.event_id == str(victim.event_id)
    )
    assert [p.event_id for p in replayed] == [str(victim.event_id)]

    await eventually(lambda: effects_of(pool, victim.event_id), 1)
    [left] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert left.event_id == str(bystander.event_id)
    assert await effects_of(pool, bystander.event_id) == 0
    # once: the replayed copy ran once more after the fix, and nothing else came back
    assert runs.count(victim.event_id) == runs.count(bystander.event_id) + 1
    assert await fetchval(pool, "SELECT count(*) FROM effects") == 1


async def test_purge_with_a_filter_removes_only_what_it_names(bus: Bus) -> None:
    node, _ = await bus.node({PINGED: record_effect})
    assert node.connection is not None
    bad = [new_envelope(PINGED, 99, f"agg-{i}", {"seq": i}) for i in range(3)]
    for env in bad:
        await publish(bus, env)
    await eventually(lambda: parked_count(node), 3)

    queues = consumer_of(node).queues
    target = str(bad[1].event_id)
    removed = await purge_parked(node.connection, queues, where=lambda p: p.event_id == target)
    assert [p.event_id for p in removed] == [target]
    left = await eventually(lambda: parked(node), lambda ps: len(ps) == 2)
    assert sorted(str(p.event_id) for p in left) == sorted(str(bad[i].event_id) for i in (0, 2))

    removed = await purge_parked(node.connection, queues)
    assert len(removed) == 2
    await eventually(lambda: parked_count(node), 0)


# -- 5. the slow path -----------------------------------------------------------------------------


async def _hold_a_batch(
    bus: Bus, node: BusNode, gate: asyncio.Event, entered: asyncio.Event, envs: list[Envelope]
) -> None:
    """Have `envs` handled as ONE batch: while a gate event's handler holds the consumer, they
    all arrive in its buffer; then the gate opens."""
    consumer = consumer_of(node)
    await publish(bus, ping(0, note="gate"))
    await asyncio.wait_for(entered.wait(), 5)
    for env in envs:
        await publish(bus, env)
    await eventually(lambda: len(consumer._buffer), len(envs))
    gate.set()


async def test_one_failing_event_in_a_batch_leaves_the_others_handled_once(bus: Bus) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        if payload.note == "gate":
            entered.set()
            await gate.wait()
        if payload.note == "poison":
            raise ValueError(f"poison seq={payload.seq}")
        await record_effect(uow, env, payload)
        uow.emit(Ponged(seq=payload.seq), aggregate_id=env.aggregate_id)

    node, pool = await bus.node({PINGED: handler})
    tap = await bus.tap(PONGED)
    ok = [ping(i) for i in (1, 2, 4, 5)]
    poison = ping(3, note="poison")
    # the poison in the middle: the fast path has run (and rolled back) two before it fails
    await _hold_a_batch(bus, node, gate, entered, [ok[0], ok[1], poison, ok[2], ok[3]])

    for env in ok:
        await eventually(partial(effects_of, pool, env.event_id), 1)
    stats = consumer_of(node).stats
    await eventually(lambda: stats.retried, lambda n: n >= 1)
    # the events the handlers emitted, caused by what they handled
    rows = await fetch(pool, f"SELECT causation_id, correlation_id, event_type FROM {EMITTED}")
    by_cause = {r["causation_id"]: r for r in rows}
    for env in ok:
        assert by_cause[str(env.event_id)]["event_type"] == PONGED
        assert by_cause[str(env.event_id)]["correlation_id"] == env.correlation_id
    assert str(poison.event_id) not in by_cause
    assert len(rows) == 1 + len(ok)  # the gate's pong and one per good event
    await eventually(lambda: len(tap.messages), len(rows))  # and the relay published them

    # the failing one goes up the ladder and into the parking lot
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert p.event_id == str(poison.event_id) and p.attempts == 3
    assert "ValueError: poison seq=3" in p.error
    assert await effects_of(pool, poison.event_id) == 0
    assert await fetchval(pool, "SELECT count(*) FROM effects") == 1 + len(ok)
    inbox = {r["event_id"] for r in await fetch(pool, "SELECT event_id FROM inbox")}
    assert poison.event_id not in inbox and all(e.event_id in inbox for e in ok)
    # gate batch, the held batch, then one batch per retry
    assert (stats.batches, stats.retried, stats.parked) == (4, 2, 1)


async def test_a_duplicate_in_a_failing_batch_is_counted_once(bus: Bus) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        if payload.note == "gate":
            entered.set()
            await gate.wait()
        if payload.note == "poison":
            raise ValueError("poison")
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: handler})
    first = ping(1)
    await publish(bus, first)
    await eventually(lambda: effects_of(pool, first.event_id), 1)

    await _hold_a_batch(bus, node, gate, entered, [first, ping(2, note="poison")])
    stats = consumer_of(node).stats
    await eventually(lambda: stats.retried, 1)
    assert await effects_of(pool, first.event_id) == 1
    assert stats.duplicates == 1


@pytest.mark.parametrize(
    ("emits", "connections"),
    [(False, "platform"), (False, "plain asyncpg"), (True, "platform")],
    ids=["no-emits", "no-emits-plain-connections", "emits"],
)
async def test_a_handler_swallowing_a_database_error_loses_no_event(
    bus: Bus, emits: bool, connections: str
) -> None:
    """With emits the outbox INSERT finds the aborted transaction out; without, the platform's
    connection's record of its COMMIT (answered ROLLBACK) does, and on a plain asyncpg
    connection, which keeps none, a SELECT 1 before the COMMIT."""
    gate, entered = asyncio.Event(), asyncio.Event()

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        if payload.note == "gate":
            entered.set()
            await gate.wait()
        await record_effect(uow, env, payload)
        if emits:
            uow.emit(Ponged(seq=payload.seq), aggregate_id=env.aggregate_id)
        if payload.note == "swallow":
            # a handler bug: it carries on in the transaction its error aborted
            with contextlib.suppress(asyncpg.DataError):
                await uow.conn.execute("SELECT 1 / 0")

    plain = {"connection_class": asyncpg.Connection} if connections == "plain asyncpg" else None
    node, pool = await bus.node({PINGED: handler}, pool_options=plain)
    before, swallower, after = ping(1), ping(2, note="swallow"), ping(3)
    await _hold_a_batch(bus, node, gate, entered, [before, swallower, after])

    stats = consumer_of(node).stats
    await eventually(lambda: stats.retried, lambda n: n >= 1)  # the held batch is settled
    # today `before` is acked with neither effect nor inbox row: its savepoint was released
    # into a transaction the swallowed error had aborted, whose COMMIT became a ROLLBACK
    await eventually(lambda: effects_of(pool, before.event_id), 1, timeout=2)
    await eventually(lambda: effects_of(pool, after.event_id), 1, timeout=3)
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1, timeout=3)
    assert p.event_id == str(swallower.event_id) and p.attempts == 3
    assert await effects_of(pool, swallower.event_id) == 0
