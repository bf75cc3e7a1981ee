"""One PostgreSQL role per service (tooling/dbroles.py), against the real server.

Each test gets a database of its own (`dbroles_<random>`, dropped at the end) and two services
with random names, whose roles are dropped at the end (roles are the cluster's, not the
database's). Schemas and tables are first made as root, as every run before the roles did;
then a service's role must own its schema and what is in it, run its migrations, LISTEN and
take advisory locks, and reach nothing of the other service's nor create in `public`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate, sql_files
from eventshop.platform.secrets import secret
from eventshop.tooling.dbroles import (
    database_url,
    password_matches,
    provision,
    provision_database,
    role_name,
)
from tests.conftest import DATABASE_URL

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def secrets_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    where = tmp_path / "secrets"
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(where))
    yield where


@dataclass(frozen=True)
class Site:
    """A throwaway database, its superuser URL, and two services' names (= their schemas)."""

    url: str
    a: str
    b: str

    @property
    def services(self) -> list[str]:
        return [self.a, self.b]

    async def root(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url)

    async def as_service(self, service: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            database_url(service, self.url), server_settings={"search_path": service}
        )
        assert await conn.fetchval("SELECT current_user") == role_name(service)
        return conn


def _on_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    tag = uuid.uuid4().hex[:8]
    database = f"dbroles_{tag}"
    made = Site(_on_database(DATABASE_URL, database), a=f"svca_{tag}", b=f"svcb_{tag}")
    admin = await asyncpg.connect(DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        root = await made.root()
        try:  # what runs before the roles left behind: schemas and tables of root's
            for schema in made.services:
                await root.execute(
                    f'CREATE SCHEMA "{schema}";'
                    f' CREATE TABLE "{schema}".things (id bigserial PRIMARY KEY, note text);'
                    f" INSERT INTO \"{schema}\".things (note) VALUES ('{schema} wrote it');"
                    f' CREATE VIEW "{schema}".notes AS SELECT note FROM "{schema}".things;'
                    f' CREATE SEQUENCE "{schema}".standalone;'
                    f" CREATE TYPE \"{schema}\".mood AS ENUM ('calm', 'cross')"
                )
        finally:
            await root.close()
        yield made
    finally:
        roles = ", ".join(f'"{role_name(s)}"' for s in made.services)
        try:
            root = await made.root()
            try:
                for service in made.services:
                    if await root.fetchval(
                        "SELECT 1 FROM pg_roles WHERE rolname = $1", role_name(service)
                    ):
                        await root.execute(f'DROP OWNED BY "{role_name(service)}" CASCADE')
            finally:
                await root.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.execute(f"DROP ROLE IF EXISTS {roles}")
        finally:
            await admin.close()


async def _migrate_as_root_then_provision(site: Site) -> list[str]:
    """Schema a as an earlier `up` left it (the platform's migrations applied as root), then
    the roles."""
    pool = await create_pool(site.url, site.a, max_size=1)
    try:
        await migrate(pool, [PLATFORM_MIGRATIONS])
    finally:
        await pool.close()
    return await provision(site.url, site.services)


async def test_a_role_owns_its_schema_and_what_root_made_in_it(site: Site) -> None:
    changed = await _migrate_as_root_then_provision(site)

    assert f"role {role_name(site.a)}" in changed and f"role {role_name(site.b)}" in changed
    root = await site.root()
    try:
        owners = await root.fetch(
            "SELECT n.nspname, pg_get_userbyid(n.nspowner) AS schema_owner,"
            " array_agg(DISTINCT pg_get_userbyid(c.relowner)) AS owners"
            " FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid"
            " WHERE n.nspname = ANY($1) GROUP BY n.nspname, n.nspowner",
            site.services,
        )
        functions = await root.fetch(
            "SELECT pg_get_userbyid(proowner) AS owner FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
            site.a,
        )
        types = await root.fetch(
            "SELECT DISTINCT pg_get_userbyid(typowner) AS owner FROM pg_type t"
            " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1",
            site.a,
        )
        kinds = await root.fetchval(
            "SELECT array_agg(DISTINCT c.relkind::text ORDER BY c.relkind::text) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            site.a,
        )
        attributes = await root.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolcanlogin"
            " FROM pg_roles WHERE rolname = $1",
            role_name(site.a),
        )
    finally:
        await root.close()
    assert {r["nspname"]: (r["schema_owner"], r["owners"]) for r in owners} == {
        site.a: (role_name(site.a), [role_name(site.a)]),
        site.b: (role_name(site.b), [role_name(site.b)]),
    }
    assert kinds == ["S", "i", "r", "v"]  # sequences, indexes, tables, a view: all the role's
    assert [f["owner"] for f in functions] == [role_name(site.a)]  # outbox_notify
    assert [t["owner"] for t in types] == [role_name(site.a)]  # mood, and the tables' row types
    assert dict(attributes) == {
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "rolbypassrls": False,
        "rolcanlogin": True,
    }


async def test_a_role_does_in_its_schema_what_its_service_does_at_start_and_runs(
    site: Site,
) -> None:
    await _migrate_as_root_then_provision(site)
    role_url = database_url(site.a, site.url)

    # the runtime's start: the pool (CREATE SCHEMA IF NOT EXISTS), then the migrations, and the
    # platform's migration applied again over root's tables, trigger and function
    pool = await create_pool(role_url, site.a, max_size=2)
    try:
        assert await migrate(pool, [PLATFORM_MIGRATIONS]) == []
        async with pool.acquire() as conn:
            for _, sql in sql_files(PLATFORM_MIGRATIONS):
                await conn.execute(sql)
            await conn.execute("CREATE TABLE IF NOT EXISTS mine (x int PRIMARY KEY)")
            await conn.execute("CREATE INDEX IF NOT EXISTS things_note ON things (note)")
            await conn.execute("INSERT INTO mine VALUES (1), (2)")
            await conn.execute("INSERT INTO things (note) VALUES ('the role wrote it')")
            assert await conn.fetchval("SELECT count(*) FROM mine") == 2
            assert await conn.fetchval("SELECT count(*) FROM things") == 2
            assert await conn.fetchval("SELECT pg_try_advisory_lock(42)") is True
            assert await conn.fetchval("SELECT pg_advisory_unlock(42)") is True
    finally:
        await pool.close()

    # LISTEN/NOTIFY: the relay listens on outbox_<schema>, the outbox trigger notifies it
    conn = await site.as_service(site.a)
    try:
        heard: asyncio.Queue[str] = asyncio.Queue()
        await conn.add_listener(f"outbox_{site.a}", lambda *args: heard.put_nowait(args[2]))
        await conn.add_listener("hello", lambda *args: heard.put_nowait(args[3]))
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, aggregate_id, correlation_id,"
            " schema_version, occurred_at, body)"
            " VALUES (gen_random_uuid(), 't', 'a', 'c', 1, now(), '')"
        )
        await conn.execute("SELECT pg_notify('hello', 'there')")
        assert await asyncio.wait_for(heard.get(), 5) == f"outbox_{site.a}"
        assert await asyncio.wait_for(heard.get(), 5) == "there"
    finally:
        await conn.close()


async def test_a_role_reaches_nothing_of_another_service_nor_public(site: Site) -> None:
    await provision(site.url, site.services)

    for me, other in ((site.a, site.b), (site.b, site.a)):
        conn = await site.as_service(me)
        try:
            assert await conn.fetchval(f'SELECT count(*) FROM "{me}".things') == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f'SELECT * FROM "{other}".things')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"INSERT INTO \"{other}\".things (note) VALUES ('forged')")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'CREATE TABLE "{other}".planted (x int)')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE public.planted (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'ALTER SCHEMA "{other}" OWNER TO CURRENT_USER')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'SET ROLE "{role_name(other)}"')
        finally:
            await conn.close()


async def test_rights_given_around_the_roles_are_taken_back(site: Site) -> None:
    await provision(site.url, site.services)
    root = await site.root()
    try:  # what someone might have granted by hand
        await root.execute(f'GRANT USAGE ON SCHEMA "{site.b}" TO PUBLIC')
        await root.execute(f'GRANT USAGE, CREATE ON SCHEMA "{site.b}" TO "{role_name(site.a)}"')
        await root.execute(f'GRANT SELECT ON "{site.b}".things TO "{role_name(site.a)}"')
        await root.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        await root.execute(f'GRANT "{role_name(site.b)}" TO "{role_name(site.a)}"')
    finally:
        await root.close()

    changed = await provision(site.url, site.services)

    assert f"PUBLIC: no USAGE on schema {site.b}" in changed
    assert f"{role_name(site.a)}: no CREATE/USAGE on schema {site.b}" in changed
    assert "PUBLIC: no CREATE on schema public" in changed
    assert f"{role_name(site.a)} no longer a member of {role_name(site.b)}" in changed
    conn = await site.as_service(site.a)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f'SELECT * FROM "{site.b}".things')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.planted (x int)")
    finally:
        await conn.close()


async def test_what_root_makes_later_in_a_schema_its_role_may_use_then_owns(site: Site) -> None:
    await provision(site.url, site.services)
    root = await site.root()
    try:  # as the operator's projection rebuild does, connected as root
        await root.execute(f'CREATE TABLE "{site.a}".rebuilt (id bigserial PRIMARY KEY, v text)')
    finally:
        await root.close()
    conn = await site.as_service(site.a)
    try:
        await conn.execute("INSERT INTO rebuilt (v) VALUES ('x')")
        assert await conn.fetchval("SELECT v FROM rebuilt") == "x"
    finally:
        await conn.close()

    assert await provision(site.url, site.services) == [
        f"1 objects in {site.a} now {role_name(site.a)}'s"
    ]


async def test_a_second_run_changes_nothing(site: Site) -> None:
    assert await _migrate_as_root_then_provision(site)

    assert await provision(site.url, site.services) == []
    # the synchronous entry point `eventshop up` calls, with its own event loop
    assert await asyncio.to_thread(provision_database, site.url, site.services) == []


async def test_a_password_changed_behind_its_back_is_set_again(site: Site) -> None:
    await provision(site.url, site.services)
    role = role_name(site.a)
    root = await site.root()
    try:
        stored = await root.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        assert password_matches(stored, secret(f"pg-{site.a}"), role)
        # PostgreSQL hashes a clear password itself: the check agrees with its SCRAM verifier
        await root.execute(f"ALTER ROLE \"{role}\" PASSWORD 'changed-by-hand'")
        stored = await root.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        assert password_matches(stored, "changed-by-hand", role)
        assert not password_matches(stored, secret(f"pg-{site.a}"), role)
    finally:
        await root.close()

    assert await provision(site.url, site.services) == [f"password {role}"]
