"""The bus benchmark's own schemas, queues and exchange: created for a run, removed after it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import aio_pika
import asyncpg

from eventshop.bench.bus.config import EVENT_TYPE, BenchConfig


async def prepare_schemas(cfg: BenchConfig) -> None:
    """The producer's and the consumer's schemas, migrated; the consumer's `effects` table."""
    from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate

    for schema in (cfg.producer, cfg.consumer):
        pool = await create_pool(cfg.settings.database_url, schema, max_size=1)
        try:
            await migrate(pool, [PLATFORM_MIGRATIONS])
            if schema == cfg.consumer:
                async with pool.acquire() as conn:
                    # no unique key on purpose: a duplicate effect shows as a second row
                    await conn.execute(
                        "CREATE TABLE effects (id bigserial PRIMARY KEY, event_id uuid NOT NULL,"
                        " seq int NOT NULL)"
                    )
        finally:
            await pool.close()


async def declare_raw_queue(cfg: BenchConfig) -> None:
    amqp = await aio_pika.connect(cfg.settings.amqp_url)
    try:
        channel = await amqp.channel()
        await channel.declare_queue(
            cfg.raw_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
    finally:
        await amqp.close()


async def cleanup(cfg: BenchConfig) -> None:
    """Drop the run's schemas, queues and exchanges; waits up to a minute for a broker that
    is restarting (another session's tests restart it), so a run cut short leaves nothing."""
    from eventshop.platform.bus import Subscription
    from eventshop.platform.bus.topology import direct_exchange_of

    try:
        conn = await asyncpg.connect(cfg.settings.database_url)
        try:
            for schema in (cfg.producer, cfg.consumer):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        print(
            f"bench cleanup: schemas {cfg.producer}, {cfg.consumer} left: {exc!r}", file=sys.stderr
        )

    queues = Subscription(cfg.consumer, {EVENT_TYPE: _noop}).queues
    names = [cfg.raw_queue, *queues.all_names]
    deadline = time.monotonic() + 60
    while True:
        try:
            amqp = await aio_pika.connect(cfg.settings.amqp_url)
            break
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            if time.monotonic() > deadline:
                print(
                    f"bench cleanup: queues {names} and exchanges of {cfg.exchange} left: {exc!r}",
                    file=sys.stderr,
                )
                return
            await asyncio.sleep(1)
    try:
        for name in names:  # a refused delete closes its channel: one channel each
            channel = await amqp.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)
        # the events exchange, and the direct exchange each service's node declared
        for exchange in (cfg.exchange, direct_exchange_of(cfg.producer), queues.direct):
            channel = await amqp.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(exchange)
    finally:
        await amqp.close()


async def _noop(*_: Any) -> None:
    return None
