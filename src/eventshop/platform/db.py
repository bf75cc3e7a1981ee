"""PostgreSQL access: a pool bound to one service's schema, and the migration runner.

Each service owns one schema (docs/DESIGN.md §6); its pool sets
`search_path` to it, so service SQL never names the schema. Migrations are plain SQL files
applied in name order under an advisory lock; a hand-written runner because the platform's
needs (per-schema, async, applied at start) are a dozen lines, and Alembic would bring
SQLAlchemy into every service for them (ADR 0002).

Pooled connections keep no session state: code that takes a session-level advisory lock or
LISTENs does it on a connection of its own (the relay) or undoes it before release (a
projection rebuild), and settings are SET LOCAL. So a connection going back to the pool is not
reset with asyncpg's reset query (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
ALL`), a round trip per acquire: the pool only rolls back a transaction left open.

Their class, `Connection`, knows whether its last transaction committed: PostgreSQL answers the
COMMIT of a transaction an error had aborted with the tag `ROLLBACK` and no error, and asyncpg's
transaction drops that tag. A caller that must not take a silent rollback for a commit (the bus's
windows, docs/adr/0003-consumer-batches.md) reads `committed` after its transaction instead of
checking the transaction with a statement of its own before committing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import resources
from typing import Any

import asyncpg

PLATFORM_MIGRATIONS = "eventshop.platform.migrations"


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that keeps what its last COMMIT did (see the docstring)."""

    #: False once a COMMIT was answered `ROLLBACK` (the transaction had been aborted)
    committed: bool = True

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self.keep_commit(query, await super().execute(query, *args, **kwargs))

    def keep_commit(self, query: str, status: Any) -> Any:
        """Note what a top-level COMMIT did; returns `status`. A subclass that wraps asyncpg's
        `execute` itself (sql_spans.py) calls it instead of this class's `execute`, so that a
        statement pays for one wrapper, not two (a coroutine layer is a few µs here)."""
        if query == _TRANSACTION_COMMIT:
            self.committed = status == "COMMIT"
        return status


#: the statement asyncpg's `Transaction` commits a top-level transaction with
_TRANSACTION_COMMIT = "COMMIT;"


def last_commit_held(conn: asyncpg.Connection) -> bool | None:
    """Whether the transaction `conn` last committed was committed (not rolled back by PostgreSQL
    because an error had aborted it); None when the connection does not keep it."""
    return conn.committed if isinstance(getattr(conn, "committed", None), bool) else None


class TransactionRolledBackError(Exception):
    """A COMMIT was answered ROLLBACK: the code went on after a database error had aborted the
    transaction, and nothing it did was kept."""

    def __init__(self, who: str) -> None:
        super().__init__(
            f"{who}: the transaction was rolled back at COMMIT (work went on after a database"
            " error had aborted it)"
        )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections see `schema` first; creates the schema if missing."""
    conn = await asyncpg.connect(dsn)
    try:
        # looked up first: a service's own role may not create schemas (the database's CREATE
        # right is checked before IF NOT EXISTS is), and its schema exists, provisioned for it
        exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
        if not exists:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}")
    except asyncpg.UniqueViolationError:  # two processes racing to create it
        pass
    finally:
        await conn.close()
    # No statement may wait forever on a connection the server has dropped: a hung await is
    # worse than an error, which the bus turns into a retry.
    kwargs.setdefault("command_timeout", 30)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={
            "search_path": schema,
            "application_name": f"eventshop-{schema}",
            # short OLTP statements only: JIT compiling one costs more than running it (seen:
            # 364 ms for a 0.7 ms catch-up query whose table the planner misjudged)
            "jit": "off",
        },
        reset=_no_session_reset,
        **{"connection_class": Connection, **kwargs},
    )
    assert pool is not None
    return pool


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing beyond the rollback asyncpg always does (see the docstring)."""


def sql_files(package: str) -> list[tuple[str, str]]:
    """(name, sql) of every `*.sql` in a package, in name order."""
    root = resources.files(package)
    return sorted(
        (entry.name, entry.read_text()) for entry in root.iterdir() if entry.name.endswith(".sql")
    )


async def migrate(pool: asyncpg.Pool, packages: Iterable[str]) -> list[str]:
    """Apply the migrations of `packages` not yet applied to this schema; returns their names."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        schema = await conn.fetchval("SELECT current_schema()")
        key = int.from_bytes(
            hashlib.sha1(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True
        )
        await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for package in packages:
            for name, sql in sql_files(package):
                full = f"{package}:{name}"
                if full in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", full)
                applied.append(full)
    return applied
