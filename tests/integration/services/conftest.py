"""Fixtures every service's integration tests share: the service's own schema, migrated.

A test module names its service and its migrations in two constants, which the fixtures read:

    SERVICE = "payments"
    MIGRATIONS = "eventshop.services.payments.migrations"  # or a list of packages

`schema_pool` is a fresh random schema of that service (tests.conftest's `make_schema`) with the
migrations applied, `pool` its pool, `context` the service's context opened as the runtime opens
it (its own settings and resources, that pool, a bus node that is never started) and `client` an
HTTP client on the service's own app, in-process. A module that needs another context (other
settings, its own resources) overrides `context`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from eventshop.platform.db import migrate
from eventshop.platform.runtime import load_definition
from eventshop.platform.service import AnyContext
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.support.services import http_client, service_context


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


@pytest.fixture
async def context(
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    request: pytest.FixtureRequest,
) -> AsyncIterator[AnyContext]:
    service: str = request.module.SERVICE
    schema, pool = schema_pool
    async with service_context(load_definition(service), schema, pool, settings) as ctx:
        yield ctx


@pytest.fixture
async def client(context: AnyContext) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(context) as c:
        yield c
