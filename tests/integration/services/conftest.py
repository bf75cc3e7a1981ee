"""Fixtures every service's integration tests share: the service's own schema, migrated.

A test module names its service and its migrations in two constants, which the fixtures read:

    SERVICE = "payments"
    MIGRATIONS = "eventshop.services.payments.migrations"  # or a list of packages

`schema_pool` is a fresh random schema of that service (tests.conftest's `make_schema`) with the
migrations applied, `pool` its pool, and `client` an HTTP client on the service's own app (its
definition's `http`), in-process. A module that needs another client defines its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from eventshop.contracts import registry
from eventshop.platform.bus.node import BusNode
from eventshop.platform.db import migrate
from eventshop.platform.runtime import ServiceContext, load_definition
from eventshop.platform.settings import PlatformSettings
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


@pytest.fixture
async def client(
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    request: pytest.FixtureRequest,
) -> AsyncIterator[httpx.AsyncClient]:
    service: str = request.module.SERVICE
    build_app = load_definition(service).http
    assert build_app is not None, f"{service} serves no HTTP"
    schema, pool = schema_pool
    bus = BusNode(service=service, schema=schema, pool=pool, registry=registry, settings=settings)
    ctx = ServiceContext(name=service, settings=settings, pool=pool, bus=bus)
    transport = httpx.ASGITransport(app=build_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{service}") as c:
        yield c
