"""What a COMMIT did, read from the connection instead of asked with a statement of its own.

PostgreSQL answers the COMMIT of a transaction an error had aborted with the tag ROLLBACK and no
error. The platform's connections (platform/db.py) keep that answer, so a bus window with
nothing to emit commits without a `SELECT 1` first (one round trip less a window), and a unit of
work whose block swallowed a database error raises instead of reporting success. Real
PostgreSQL and RabbitMQ; no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from eventshop.contracts import Envelope
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import TransactionRolledBackError, last_commit_held
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.integration.helpers import PINGED, Bus, effects_of, ping, record_effect


async def test_a_connection_keeps_whether_its_commit_committed(
    make_schema: SchemaFactory, settings: PlatformSettings
) -> None:
    _, pool = await make_schema("commit")
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE kept (n int)")
        async with conn.transaction():
            await conn.execute("INSERT INTO kept VALUES (1)")
        assert last_commit_held(conn) is True

        async with conn.transaction():
            await conn.execute("INSERT INTO kept VALUES (2)")
            with contextlib.suppress(asyncpg.DataError):
                await conn.execute("SELECT 1 / 0")  # aborts the transaction; swallowed
        assert last_commit_held(conn) is False  # COMMIT was answered ROLLBACK, without an error

        async with conn.transaction():  # a savepoint's error undone does not abort the whole
            with contextlib.suppress(asyncpg.DataError):
                async with conn.transaction():
                    await conn.execute("SELECT 1 / 0")
            await conn.execute("INSERT INTO kept VALUES (3)")
        assert last_commit_held(conn) is True
        assert [r["n"] for r in await conn.fetch("SELECT n FROM kept ORDER BY n")] == [1, 3]

    plain = await asyncpg.connect(settings.database_url)
    try:
        assert type(plain) is asyncpg.Connection  # (asyncpg's isinstance() takes any of them)
        async with plain.transaction():
            await plain.execute("SELECT 1")
        assert last_commit_held(plain) is None  # a plain asyncpg connection keeps nothing
    finally:
        await plain.close()


@pytest.mark.parametrize("connections", ["platform", "plain asyncpg"])
async def test_a_window_with_nothing_to_emit_commits_without_a_select_1(
    bus: Bus, connections: str
) -> None:
    """The statements of a window, from the handler's on: the effect, then the COMMIT alone on
    the platform's connection; a plain asyncpg connection still checks with a SELECT 1."""
    statements: list[str] = []
    handled = asyncio.Event()

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        if "COMMIT;" not in statements:  # the window's statements, up to its COMMIT
            statements.append(record.query.strip())

    async def handler(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        uow.conn.add_query_logger(log)
        await record_effect(uow, env, payload)
        uow.after_commit(handled.set)

    plain = {"connection_class": asyncpg.Connection} if connections == "plain asyncpg" else None
    _, pool = await bus.node({PINGED: handler}, pool_options=plain)
    env = ping(1)
    await (await bus.publisher()).publish(env.event_type, message_from_envelope(env))
    await asyncio.wait_for(handled.wait(), 10)
    assert await effects_of(pool, env.event_id) == 1
    assert statements[0].startswith("INSERT INTO effects"), statements
    if connections == "platform":
        assert statements[1:] == ["COMMIT;"]
    else:
        assert statements[1:] == ["SELECT 1", "COMMIT;"]


async def test_a_unit_of_work_whose_commit_rolled_back_raises(make_schema: SchemaFactory) -> None:
    """An HTTP route's unit of work that went on after a database error, with nothing to emit:
    its COMMIT kept nothing, so it must not return as if it had."""
    _, pool = await make_schema("uow")
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE kept (n int)")
    with pytest.raises(TransactionRolledBackError):
        async with UnitOfWork.begin(pool, service="orders") as uow:
            await uow.conn.execute("INSERT INTO kept VALUES (1)")
            with contextlib.suppress(asyncpg.DataError):
                await uow.conn.execute("SELECT 1 / 0")
    async with UnitOfWork.begin(pool, service="orders") as uow:
        await uow.conn.execute("INSERT INTO kept VALUES (2)")
    async with pool.acquire() as conn:
        assert [r["n"] for r in await conn.fetch("SELECT n FROM kept")] == [2]
