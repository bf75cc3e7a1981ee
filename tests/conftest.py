"""Shared fixtures. What is real: RabbitMQ, PostgreSQL and Redis on loopback (no mocks).

Every test run gets its own RabbitMQ vhost (random name, deleted at the end) and every test its
own PostgreSQL schemas (random names, dropped at the end), so runs never collide and can repeat.
Unit tests (tests/unit) use none of this.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import asyncpg
import pytest

from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate
from eventshop.platform.settings import PlatformSettings

DATABASE_URL = os.environ.get(
    "EVENTSHOP_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/eventshop_test"
)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    with contextlib.suppress(subprocess.CalledProcessError):
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def settings(vhost: str) -> PlatformSettings:
    return PlatformSettings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        database_url=DATABASE_URL,
        retry_delays_ms=[100, 200],
        relay_poll_s=0.2,
        confirm_timeout_s=5.0,
        handler_timeout_s=5.0,
        # guest for every service on this throwaway vhost: the user every event must come from
        broker_identity="shared",
        internal_key="a-key-for-the-tests-only",  # type: ignore[arg-type]
    )


@pytest.fixture
def random_name() -> Callable[[str], str]:
    def make(prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:8]}"

    return make


class SchemaFactory(Protocol):
    """`make_schema(prefix, **pool_options)`: a migrated schema of a random name and its pool."""

    async def __call__(self, prefix: str, **pool_options: Any) -> tuple[str, asyncpg.Pool]: ...


@pytest.fixture
async def make_schema(settings: PlatformSettings) -> AsyncIterator[SchemaFactory]:
    """Create a migrated schema with a random name (outbox, inbox); dropped after the test."""
    made: list[tuple[str, asyncpg.Pool]] = []

    async def make(prefix: str, **pool_options: Any) -> tuple[str, asyncpg.Pool]:
        schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
        pool = await create_pool(settings.database_url, schema, **{"max_size": 5, **pool_options})
        await migrate(pool, [PLATFORM_MIGRATIONS])
        made.append((schema, pool))
        return schema, pool

    yield make
    for _, pool in made:
        await pool.close()
    if made:
        conn = await asyncpg.connect(settings.database_url)
        try:
            for schema, _ in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
