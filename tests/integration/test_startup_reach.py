"""A starting service waits for a broker or a database that is not listening yet
(platform/reach.py): the real RabbitMQ and PostgreSQL, reached through a TCP proxy
(chaos/proxy.py) that starts listening only a second after the first attempt. A refused login
fails at once, and so does everything with no wait allowed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import aio_pika
import aiormq.exceptions
import pytest

from eventshop.chaos.proxy import FaultProxy, upstream_of, via_proxy
from eventshop.platform.db import create_pool
from eventshop.platform.reach import AMQP_CLIENT_LOGGERS, once_reachable
from eventshop.platform.settings import PlatformSettings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reached_late(
    url: str, default_port: int, delay_s: float = 1.0
) -> tuple[str, asyncio.Task[FaultProxy]]:
    """`url` through a proxy that starts listening only `delay_s` from now: the proxied URL,
    and the task that opens the proxy (await it to close the proxy at the end)."""
    port = free_port()

    async def listening() -> FaultProxy:
        await asyncio.sleep(delay_s)
        return await FaultProxy(upstream_of(url, default_port)).start(port)

    return via_proxy(url, port), asyncio.create_task(listening())


async def test_a_broker_that_listens_a_second_late_is_waited_for(
    settings: PlatformSettings,
) -> None:
    url, opening = reached_late(settings.amqp_url, 5672)
    started = time.monotonic()
    connection = await once_reachable(
        "broker", lambda: aio_pika.connect_robust(url), within_s=30, max_delay_s=0.2
    )
    proxy = await opening
    try:
        assert time.monotonic() - started >= 1.0  # refused before the proxy listened
        channel = await connection.channel()
        await channel.declare_queue("", exclusive=True)  # a working connection
        assert proxy.accepted >= 1
    finally:
        await connection.close()
        await proxy.close()


async def test_while_it_waits_the_clients_error_lines_are_not_written(
    settings: PlatformSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """aiormq writes an ERROR for every refused attempt (and aio-pika that it reconnects, which
    it does not): while a wait is allowed they are dropped, `startup.waiting` says it; with no
    wait they are written as before (which shows the capture sees them)."""
    caplog.set_level(logging.DEBUG)
    url, opening = reached_late(settings.amqp_url, 5672, delay_s=1.5)
    connection = await once_reachable(
        "broker",
        lambda: aio_pika.connect_robust(url),
        within_s=30,
        max_delay_s=0.2,
        quiet=AMQP_CLIENT_LOGGERS,
    )
    proxy = await opening
    await connection.close()
    await proxy.close()
    await asyncio.sleep(0.1)  # anything the failed attempts left to run, run
    assert proxy.accepted >= 1
    said = [
        r for r in caplog.records if r.name in AMQP_CLIENT_LOGGERS and r.levelno >= logging.INFO
    ]
    assert said == [], [r.getMessage() for r in said]
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await once_reachable(
            "broker", lambda: aio_pika.connect_robust(closed), within_s=0, quiet=AMQP_CLIENT_LOGGERS
        )
    assert any(
        r.name == "aiormq.connection" and r.levelno == logging.ERROR for r in caplog.records
    ), [(r.name, r.getMessage()) for r in caplog.records]


async def test_a_database_that_listens_a_second_late_is_waited_for(
    settings: PlatformSettings,
) -> None:
    url, opening = reached_late(settings.database_url, 5432)
    pool = await once_reachable(
        "database", lambda: create_pool(url, "public"), within_s=30, max_delay_s=0.2
    )
    proxy = await opening
    try:
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()
        await proxy.close()


async def test_without_a_wait_or_past_it_the_last_error_is_raised() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    started = time.monotonic()
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await once_reachable("broker", lambda: aio_pika.connect_robust(url), within_s=0)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await once_reachable("broker", lambda: aio_pika.connect_robust(url), within_s=0.5)
    assert time.monotonic() - started < 10


async def test_a_refused_login_is_not_waited_for(settings: PlatformSettings) -> None:
    wrong = settings.amqp_url.replace("guest:guest@", "guest:not-the-password@")
    assert wrong != settings.amqp_url
    started = time.monotonic()
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await once_reachable("broker", lambda: aio_pika.connect_robust(wrong), within_s=60)
    assert time.monotonic() - started < 10  # not the minute it would have waited
