"""The event store's contract against PostgresEventStore on the real PostgreSQL.

The same suite as tests/unit/eventstore/test_memory_store.py (InMemoryEventStore). Real: a
random schema per test, migrated; every transaction is a real one on its own pooled connection,
so concurrent writers and readers race on the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest

from eventshop.platform.db import create_pool, migrate
from eventshop.platform.eventstore import MIGRATIONS, PostgresEventStore, Upcasters
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.unit.eventstore.contract import EventStoreContract

pytestmark = pytest.mark.integration


@dataclass
class PostgresBackend:
    pool: asyncpg.Pool

    def store(self, upcasters: Upcasters | None = None) -> PostgresEventStore:
        return PostgresEventStore(upcasters)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn


@pytest.fixture
async def backend(
    make_schema: SchemaFactory, settings: PlatformSettings
) -> AsyncIterator[PostgresBackend]:
    schema, small = await make_schema("escontract")
    await migrate(small, [MIGRATIONS])
    # room for the property test's writers and readers, each on its own connection
    pool = await create_pool(settings.database_url, schema, max_size=12)
    try:
        yield PostgresBackend(pool)
    finally:
        await pool.close()


class TestPostgresEventStore(EventStoreContract):
    pass
