"""Fixtures every service's integration tests share: the service's own schema, migrated.

A test module names its service and its migrations in two constants, which the fixtures read:

    SERVICE = "payments"
    MIGRATIONS = "eventshop.services.payments.migrations"  # or a list of packages

`schema_pool` is a fresh random schema of that service (tests.conftest's `make_schema`) with the
migrations applied, and `pool` its pool.
"""

from __future__ import annotations

import asyncpg
import pytest

from eventshop.platform.db import migrate
from tests.conftest import SchemaFactory


@pytest.fixture
async def schema_pool(
    make_schema: SchemaFactory, request: pytest.FixtureRequest
) -> tuple[str, asyncpg.Pool]:
    service: str = request.module.SERVICE
    migrations: str | list[str] = request.module.MIGRATIONS
    schema, pool = await make_schema(service)
    await migrate(pool, [migrations] if isinstance(migrations, str) else migrations)
    return schema, pool


@pytest.fixture
def pool(schema_pool: tuple[str, asyncpg.Pool]) -> asyncpg.Pool:
    return schema_pool[1]
