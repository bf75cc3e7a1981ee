"""The chaos proxy (eventshop/chaos/proxy.py) between real clients and the real servers: it
carries PostgreSQL's and RabbitMQ's protocols unchanged, and each fault does what it says. The
lower bounds on time below are certain (a proxy cannot deliver before it is allowed to); no
upper bound is asserted, the machine may be slow."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from eventshop.chaos.proxy import FaultProxy, upstream_of, via_proxy
from eventshop.platform.settings import PlatformSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def database(settings: PlatformSettings) -> str:
    return settings.database_url


@pytest.fixture
async def pg_proxy(database: str) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(upstream_of(database, 5432)).start()
    _urls[proxy] = database
    yield proxy
    await proxy.close()


#: the database URL each proxy stands in front of
_urls: dict[FaultProxy, str] = {}


async def connect(proxy: FaultProxy) -> asyncpg.Connection:
    return await asyncpg.connect(via_proxy(_urls[proxy], proxy.port), timeout=10)


async def test_it_carries_postgresql_unchanged(pg_proxy: FaultProxy) -> None:
    conn = await connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT $1::text || 'b'", "a") == "ab"
        assert len(await conn.fetchval("SELECT repeat('x', 1000000)")) == 1_000_000
    finally:
        await conn.close()
    assert pg_proxy.accepted == 1


async def test_latency_holds_every_chunk_both_ways(pg_proxy: FaultProxy) -> None:
    conn = await connect(pg_proxy)
    try:
        pg_proxy.latency(0.1, 0.02)
        started = time.monotonic()
        assert await conn.fetchval("SELECT 1") == 1
        assert time.monotonic() - started >= 2 * 0.08  # there and back, each at least 80 ms
        pg_proxy.heal()
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()


async def test_a_black_hole_holds_a_query_and_loses_nothing_of_it(pg_proxy: FaultProxy) -> None:
    conn = await connect(pg_proxy)
    try:
        pg_proxy.black_hole()
        query = asyncio.create_task(conn.fetchval("SELECT 'through the hole'"))
        await asyncio.sleep(1.0)
        assert not query.done()
        # a new connection hangs too, before it reaches the server
        late = asyncio.create_task(connect(pg_proxy))
        await asyncio.sleep(0.5)
        assert not late.done()
        pg_proxy.heal()
        assert await asyncio.wait_for(query, 10) == "through the hole"
        other = await asyncio.wait_for(late, 10)
        assert await other.fetchval("SELECT 3") == 3
        await other.close()
    finally:
        await conn.close()


async def test_a_reset_cuts_every_connection_and_new_ones_go_through(
    pg_proxy: FaultProxy,
) -> None:
    first, second = await connect(pg_proxy), await connect(pg_proxy)
    assert pg_proxy.reset() == 2
    for conn in (first, second):
        with pytest.raises(
            (ConnectionError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError)
        ):
            await conn.fetchval("SELECT 1")
        conn.terminate()
    again = await connect(pg_proxy)
    try:
        assert await again.fetchval("SELECT 4") == 4
    finally:
        await again.close()


async def test_a_slow_link_takes_its_time_for_a_large_answer(pg_proxy: FaultProxy) -> None:
    conn = await connect(pg_proxy)
    try:
        pg_proxy.bandwidth(64 * 1024)
        started = time.monotonic()
        answer = await conn.fetchval("SELECT repeat('y', 128 * 1024)")
        assert len(answer) == 128 * 1024
        assert time.monotonic() - started >= 1.5  # 128 KB at 64 KB/s: two seconds, about
    finally:
        await conn.close()


async def test_it_carries_amqp_unchanged(settings: PlatformSettings) -> None:
    amqp_url = settings.amqp_url
    proxy = await FaultProxy(upstream_of(amqp_url, 5672)).start()
    try:
        conn = await aio_pika.connect(via_proxy(amqp_url, proxy.port))
        try:
            channel = await conn.channel()
            queue = await channel.declare_queue(f"proxy-{uuid.uuid4().hex}", auto_delete=True)
            await channel.default_exchange.publish(
                aio_pika.Message(b"across the proxy"), routing_key=queue.name
            )
            got = await queue.get(timeout=10, fail=False)
            for _ in range(50):
                if got is not None:
                    break
                await asyncio.sleep(0.1)
                got = await queue.get(timeout=10, fail=False)
            assert got is not None and got.body == b"across the proxy"
            await got.ack()
        finally:
            await conn.close()
    finally:
        await proxy.close()
