"""The platform's child processes: the outbox writer, the relay and the consumer with its inbox.

The relay and the consumer are the real `BusNode` of a producing and of a consuming service;
the consumer's handler writes one `effects` row per event (no unique key, so a duplicate
effect would show). Importing this module registers the benchmark's event type.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from eventshop.bench.bus.config import EVENT_TYPE
from eventshop.bench.bus.protocol import say, wait_for
from eventshop.contracts import Envelope, EventPayload, registry
from eventshop.platform.settings import PlatformSettings

if TYPE_CHECKING:  # the platform's modules are imported once logging is configured
    import asyncpg

    from eventshop.platform.bus import Subscription
    from eventshop.platform.bus.node import BusNode


@registry.event(EVENT_TYPE, version=1)
class BenchPinged(EventPayload):
    seq: int = Field(ge=0)
    note: str = ""


async def writer(cfg: Mapping[str, Any]) -> None:
    from eventshop.platform import collector
    from eventshop.platform.bus import UnitOfWork
    from eventshop.platform.db import create_pool

    pool = await create_pool(cfg["database_url"], cfg["schema"], min_size=1, max_size=1)
    count, batch, note = cfg["count"], cfg["batch"], cfg["note"]
    # as a service process is once started (the collector's settings from the environment)
    collector.tune(PlatformSettings(amqp_url=cfg["amqp_url"], database_url=cfg["database_url"]))
    say({"ready": True})
    await wait_for("go")
    start = time.monotonic()
    for first in range(0, count, batch):
        async with UnitOfWork.begin(pool, service=cfg["service"]) as uow:
            for seq in range(first, min(count, first + batch)):
                uow.emit(BenchPinged(seq=seq, note=note), aggregate_id=f"bench-{seq}")
    end = time.monotonic()
    say({"start": start, "end": end})
    await wait_for("stop")
    await pool.close()


async def _start_node(
    cfg: Mapping[str, Any], subscription: Subscription | None = None
) -> tuple[asyncpg.Pool, BusNode]:
    """The pool and the started `BusNode` of `cfg["service"]` (relay; consumer if subscribed)."""
    from eventshop.platform import collector
    from eventshop.platform.bus.node import BusNode
    from eventshop.platform.db import create_pool

    # min_size == max_size: every connection is open (and its backend known) before `go`
    pool = await create_pool(cfg["database_url"], cfg["schema"], min_size=4, max_size=4)
    settings = PlatformSettings(
        amqp_url=cfg["amqp_url"],
        database_url=cfg["database_url"],
        exchange=cfg["exchange"],
        prefetch=cfg["prefetch"],
        relay_batch=cfg["relay_batch"],
        retention_outbox_sent_s=cfg["retention_outbox_sent_s"],
        broker_identity="shared",  # one user for every role, on the benchmark's own vhost
    )
    node = BusNode(
        service=cfg["service"],
        schema=cfg["schema"],
        pool=pool,
        registry=registry,
        settings=settings,
        subscription=subscription,
    )
    await node.start()
    collector.tune(settings)  # as `eventshop run` does once a service has started
    return pool, node


async def _stop_node(pool: asyncpg.Pool, node: BusNode) -> None:
    await wait_for("stop")
    await node.stop()
    await pool.close()


async def relay(cfg: Mapping[str, Any]) -> None:
    pool, node = await _start_node(cfg)
    relay = node.relay
    assert relay is not None
    while not relay.is_leader:  # noqa: ASYNC110 - a flag of the relay, no event to wait on
        await asyncio.sleep(0.01)
    say({"ready": True})
    await wait_for("go")
    deadline = time.monotonic() + cfg["timeout_s"]
    # a counter of the relay, no event to wait on; a 2 ms poll costs nothing measurable
    while relay.published < cfg["count"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    say({"end": time.monotonic(), "published": relay.published})
    await _stop_node(pool, node)


def effects_handler(*, batched: bool) -> Any:
    """The consumer's handler: one `effects` row per event (no unique key: a duplicate shows).

    Batched, a window's events go in one multi-row INSERT; otherwise one INSERT each.
    """
    from eventshop.platform.bus import BatchHandler, Delivery, UnitOfWork

    async def many(events: Sequence[Delivery]) -> None:
        await events[0][0].conn.execute(
            "INSERT INTO effects (event_id, seq) SELECT * FROM unnest($1::uuid[], $2::int[])",
            [env.event_id for _, env, _ in events],
            [ping.seq for _, _, ping in events],
        )

    async def one(uow: UnitOfWork, env: Envelope, ping: BenchPinged) -> None:
        await uow.conn.execute(
            "INSERT INTO effects (event_id, seq) VALUES ($1, $2)", env.event_id, ping.seq
        )

    return BatchHandler(many) if batched else one


async def consumer(cfg: Mapping[str, Any]) -> None:
    from eventshop.platform.bus import Subscription

    subscription = Subscription(
        cfg["service"], {EVENT_TYPE: effects_handler(batched=cfg["batch_handler"])}
    )
    pool, node = await _start_node(cfg, subscription)
    consumer = node.consumer
    assert consumer is not None
    say({"ready": True})
    await wait_for("go")
    target = cfg["count"]
    start = time.monotonic()
    deadline = start + cfg["timeout_s"]
    # `stats.handled` counts after each commit and is never below the effects committed; once
    # it reaches the target, the database says whether every effect is there
    while time.monotonic() < deadline:
        if consumer.stats.handled >= target:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects") >= target:
                    break
        await asyncio.sleep(0.002)
    end = time.monotonic()
    stats = consumer.stats
    say(
        {
            "start": start,
            "end": end,
            "handled": stats.handled,
            "duplicates": stats.duplicates,
            "batches": stats.batches,
            "retried": stats.retried,
            "parked": stats.parked,
        }
    )
    await _stop_node(pool, node)
