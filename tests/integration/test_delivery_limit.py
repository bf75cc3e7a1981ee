"""The delivery limit (ADR 0008) on the real broker: a message that kills its consumer is parked
by RabbitMQ after `max_deliveries` deliveries, with its headers, and replays like any other.

A consumer process is the platform's own (tests/integration/poison_consumer.py) in a subprocess
whose handler `os._exit`s on the poison; the test starts it again each time it dies, as a
supervisor would, until it stays up. The policy is the one provisioning sets
(`tooling.broker.apply_delivery_limits`), on this run's vhost. Without it the poison is
redelivered for ever, and these tests fail when it outlives `max_deliveries` + 2 processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from eventshop.contracts import Envelope
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.bus.parking import list_parked, replay_parked
from eventshop.platform.bus.topology import ServiceQueues, declare_service_queues
from eventshop.platform.bus.wire import encode_body, message_from_envelope
from eventshop.platform.db import migrate
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling.broker import apply_delivery_limits
from tests.conftest import SchemaFactory, rabbitmqctl
from tests.integration.helpers import (
    PINGED,
    TEST_MIGRATIONS,
    Bus,
    consumer_of,
    effects_of,
    parked,
    ping,
    record_effect,
)
from tests.integration.poison_consumer import KILLED, POISON
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policies(vhost: str) -> Iterator[list[str]]:
    """Services whose delivery-limit policy a test set: cleared at the end."""
    services: list[str] = []
    yield services
    for service in services:
        subprocess.run(
            [
                "rabbitmqctl",
                "-q",
                "clear_policy",
                "-p",
                vhost,
                f"eventshop-delivery-limit-{service}",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )


class Service:
    """A consuming service of its own: a schema with `effects`, its queues, its limit."""

    def __init__(self, bus: Bus, name: str, schema: str, pool: asyncpg.Pool) -> None:
        self.bus = bus
        self.name = name
        self.schema = schema
        self.pool = pool
        self.queues = ServiceQueues(name, (PINGED,), tuple(bus.settings.retry_delays_ms))

    async def publish(self, *envs: Envelope) -> None:
        publisher = await self.bus.publisher()
        for env in envs:
            await publisher.publish(env.event_type, message_from_envelope(env))  # or raises

    async def parked(self, max_deliveries: int) -> list[str]:
        found = await list_parked(
            await self.bus.connection(), self.queues, max_deliveries=max_deliveries
        )
        return [p.event_id or "" for p in found]


async def a_service(
    bus: Bus,
    make_schema: SchemaFactory,
    vhost: str,
    policies: list[str],
    max_deliveries: int | None,
) -> Service:
    """Queues declared as a consumer declares them (no x-delivery-limit), then the policy."""
    name = bus.service_name("dl")
    schema, pool = await make_schema(name)
    await migrate(pool, [TEST_MIGRATIONS])
    service = Service(bus, name, schema, pool)
    bus.delete_at_end(service.queues)
    await declare_service_queues(await bus.connection(), bus.settings.exchange, service.queues)
    if max_deliveries is not None:
        policies.append(name)
        assert apply_delivery_limits([name], vhost=vhost, max_deliveries=max_deliveries) == [
            f"delivery limit {name} ({max_deliveries})"
        ]
    return service


async def run_until_settled(
    service: Service,
    tmp: Path,
    *,
    prefetch: int,
    settled: Callable[[], Awaitable[bool]],
    max_deliveries: int,
    cured: bool = False,
) -> int:
    """Start the consumer process again each time the poison kills it, until `settled`; the
    number of processes killed. Fails once more than `max_deliveries` + 2 have been."""
    s = service.bus.settings
    env = {
        **os.environ,
        "EVENTSHOP_AMQP_URL": s.amqp_url,
        "EVENTSHOP_DATABASE_URL": s.database_url,
        "EVENTSHOP_BROKER_IDENTITY": s.broker_identity,
        "EVENTSHOP_RETRY_DELAYS_MS": json.dumps(s.retry_delays_ms),
        "EVENTSHOP_PREFETCH": str(prefetch),
        "EVENTSHOP_INTERNAL_KEY": "a-key-for-the-tests-only",
    }
    args = [service.name, service.schema, str(tmp / "deliveries"), *(["--cured"] if cured else [])]
    kills = 0
    while True:
        with (tmp / "consumer.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.poison_consumer", *args,
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline, stopped = time.monotonic() + 30, False
        try:
            while proc.returncode is None and not await settled():
                assert time.monotonic() < deadline, "the consumer neither died nor settled"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)
        finally:
            if proc.returncode is None:  # settled (or the test failed): a graceful stop
                stopped = True
                proc.terminate()
                await proc.wait()
        if stopped:
            return kills
        log_tail = (tmp / "consumer.log").read_text()[-2_000:]
        assert proc.returncode == KILLED, f"the consumer exited with {proc.returncode}: {log_tail}"
        kills += 1
        if kills > max_deliveries + 2:
            pytest.fail(
                f"the poison was delivered {kills} times and is still redelivered: "
                f"no delivery limit on {service.name}"
            )


def deliveries_noted(tmp: Path) -> list[str]:
    path = tmp / "deliveries"
    return path.read_text().split() if path.exists() else []


async def test_a_message_that_kills_its_consumer_is_parked_after_n_deliveries(
    bus: Bus,
    make_schema: SchemaFactory,
    vhost: str,
    policies: list[str],
    settings: PlatformSettings,
    tmp_path: Path,
) -> None:
    n = settings.max_deliveries  # the default, 10
    service = await a_service(bus, make_schema, vhost, policies, n)
    before = [ping(i) for i in range(1, 4)]
    poison = ping(4, note=POISON)
    after = [ping(i) for i in range(5, 8)]
    await service.publish(*before, poison, *after)

    async def settled() -> bool:
        handled = [await effects_of(service.pool, e.event_id) for e in before + after]
        return handled == [1] * 6 and await service.parked(n) == [str(poison.event_id)]

    started = time.monotonic()
    # one message in flight at a time: the poison dies alone (window-mates: the next test)
    kills = await run_until_settled(
        service, tmp_path, prefetch=1, settled=settled, max_deliveries=n
    )
    took = time.monotonic() - started

    assert kills == n
    assert deliveries_noted(tmp_path) == [str(poison.event_id)] * n
    [p] = await list_parked(await bus.connection(), service.queues, max_deliveries=n)
    assert p.error == f"delivery limit reached ({n} deliveries)"
    assert p.deliveries == n and p.attempts == n
    # the original message, as its producer sent it
    assert p.event_id == str(poison.event_id)
    assert p.event_type == PINGED
    assert p.correlation_id == poison.correlation_id
    sent = dict(message_from_envelope(poison).headers or {})
    assert sent["schema_version"] == 2
    assert {k: p.headers.get(k) for k in sent} == sent  # every header it was sent with
    assert p.body == encode_body(poison)
    # and the broker's word on why
    [death] = p.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", service.name, 1)
    assert p.headers["x-first-death-reason"] == "delivery_limit"
    assert p.parked_at is not None and p.first_failure_at is None
    assert "x-error" not in p.headers and "x-parked-by" not in p.headers
    # every other message handled once; nothing else parked
    for env in before + after:
        assert await effects_of(service.pool, env.event_id) == 1
    print(f"\n{n} deliveries, {kills} processes killed, parked in {took:.1f} s")

    # the cause fixed, the poison replayed: handled once, not at the limit again
    replayed = await replay_parked(
        await bus.connection(), await bus.publisher(), service.queues, max_deliveries=n
    )
    assert [r.event_id for r in replayed] == [str(poison.event_id)]

    async def cured() -> bool:
        return await effects_of(service.pool, poison.event_id) == 1

    assert (
        await run_until_settled(
            service, tmp_path, prefetch=1, settled=cured, max_deliveries=n, cured=True
        )
        == 0
    )
    assert await service.parked(n) == []


async def test_the_poisons_window_mates_are_handled_and_only_the_poison_is_parked(
    bus: Bus,
    make_schema: SchemaFactory,
    vhost: str,
    policies: list[str],
    tmp_path: Path,
) -> None:
    """With the default prefetch, what the consumer holds when it dies comes back too, and is
    counted too. A consumer starts careful (one message at a time until a fresh one), so after
    the first death the window-mates are handled one by one and the later deaths count against
    the poison alone: it is parked at the limit, and every mate is handled once, none parked."""
    n = 3
    service = await a_service(bus, make_schema, vhost, policies, n)
    poison = ping(1, note=POISON)
    mates = [ping(i) for i in range(2, 8)]
    await service.publish(poison, *mates)

    async def settled() -> bool:
        parked_ids = await service.parked(n)
        handled = [await effects_of(service.pool, e.event_id) for e in mates]
        return str(poison.event_id) in parked_ids and all(
            h == 1 or str(e.event_id) in parked_ids for h, e in zip(handled, mates, strict=True)
        )

    kills = await run_until_settled(
        service, tmp_path, prefetch=256, settled=settled, max_deliveries=n
    )
    assert kills == n
    assert await service.parked(n) == [str(poison.event_id)]
    assert [await effects_of(service.pool, e.event_id) for e in mates] == [1] * len(mates)


async def test_a_message_the_broker_parked_replays_through_the_retry_ladder(
    bus: Bus, make_schema: SchemaFactory, vhost: str, policies: list[str]
) -> None:
    """The broker's `x-death` names the service's queue; on a copy that goes up the retry ladder
    RabbitMQ would take the way back for a dead-letter cycle and drop it. A replay leaves it
    behind, so a replayed message may fail again and still arrive."""
    n = 2
    service = await a_service(bus, make_schema, vhost, policies, n)
    env = ping(1)
    await service.publish(env)
    connection = await bus.connection()
    for _ in range(n):  # a consumer that dies holding it: its channel closes unsettled
        channel = await connection.channel()
        queue = await channel.get_queue(service.name, ensure=False)
        assert await queue.get(no_ack=False, fail=False) is not None
        await channel.close()
    [p] = await eventually(
        lambda: list_parked(connection, service.queues, max_deliveries=n),
        lambda ps: len(ps) == 1,
    )
    assert p.error == f"delivery limit reached ({n} deliveries)"

    runs: list[str] = []

    async def fails_once(uow: UnitOfWork, e: Envelope, payload: object) -> None:
        runs.append(str(e.event_id))
        if len(runs) == 1:
            raise RuntimeError("not yet")
        await record_effect(uow, e, payload)  # type: ignore[arg-type]

    node, pool = await bus.node({PINGED: fails_once}, service=service.name)
    # the node declared its queues again: the same arguments, the policy untouched
    assert await replay_parked(connection, await bus.publisher(), service.queues) != []
    await eventually(lambda: effects_of(pool, env.event_id), 1)
    assert consumer_of(node).stats.retried == 1
    assert runs == [str(env.event_id)] * 2
    assert await parked(node) == []


async def test_provisioning_sets_the_policy_on_the_main_queue_only(
    bus: Bus, make_schema: SchemaFactory, vhost: str, policies: list[str]
) -> None:
    service = await a_service(bus, make_schema, vhost, policies, 10)
    name = f"eventshop-delivery-limit-{service.name}"
    rows = [r.split("\t") for r in rabbitmqctl("list_policies", "-p", vhost).splitlines()]
    [row] = [r for r in rows if r[1] == name]
    assert row[2:4] == [f"^{service.name}$", "queues"]
    assert json.loads(row[4]) == {
        "delivery-limit": 9,
        "dead-letter-exchange": f"{service.name}.direct",
        "dead-letter-routing-key": f"{service.name}.parked",
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }
    # a second run finds it as it should be and changes nothing; another limit is set again
    assert apply_delivery_limits([service.name], vhost=vhost, max_deliveries=10) == []
    assert apply_delivery_limits([service.name], vhost=vhost, max_deliveries=5) == [
        f"delivery limit {service.name} (5)"
    ]
    # it reaches the queue declared before it (no x-delivery-limit argument), and no other
    applied = {}
    for line in rabbitmqctl("list_queues", "-p", vhost, "name", "policy").splitlines():
        queue, _, policy = line.partition("\t")
        applied[queue] = policy
    assert applied[service.name] == name
    assert applied[f"{service.name}.parked"] == ""
    assert all(applied[q] == "" for q in service.queues.all_names if ".delay." in q)


async def test_a_message_nacked_with_requeue_is_parked_at_the_limit_too(
    bus: Bus, make_schema: SchemaFactory, vhost: str, policies: list[str]
) -> None:
    """The other way a message comes back for ever: a consumer that hands it back."""
    n = 3
    service = await a_service(bus, make_schema, vhost, policies, n)
    env = ping(1)
    await service.publish(env)
    channel = await (await bus.connection()).channel()
    queue = await channel.get_queue(service.name, ensure=False)
    counts = []
    for _ in range(n):
        msg = await eventually(lambda: queue.get(no_ack=False, fail=False), lambda m: m is not None)
        assert isinstance(msg, aio_pika.abc.AbstractIncomingMessage)
        counts.append(int(str((msg.headers or {}).get("x-delivery-count", 0))))
        await msg.nack(requeue=True)
    await channel.close()
    assert counts == [0, 1, 2]  # quorum queues say so from the first redelivery
    assert await eventually(lambda: service.parked(n), lambda ps: len(ps) == 1) == [
        str(env.event_id)
    ]
