"""Retention: the inbox, the sent outbox rows and the HTTP idempotency keys are kept for a window,
then deleted, so those tables stop growing for ever (ADR 0009).

Every service runs the job (`keep_tables_bounded`, started with its jobs by
platform/service.py), with no code of its own: it deletes from whichever of these tables its
schema has, each after its window (PlatformSettings, `EVENTSHOP_RETENTION_*`):

    inbox             handled_at  older than retention_inbox_s (7 days)
    outbox_sent       sent_at     older than retention_outbox_sent_s (1 hour): the rows the
                                  relay moved out of the outbox once sent (ADR 0021); an
                                  unsent row is in `outbox`, never deleted, however old
    idempotency_keys  created_at  older than retention_idempotency_keys_s (24 hours): the table
                                  a service keeps HTTP Idempotency-Keys in, if it has one

The archive's `archived_events` is the permanent record and is in no list here.

Each batch is one short transaction deleting at most `retention_batch` rows, oldest first, by
their ctid (an index on the age column finds them: platform/migrations/0002 and 0003);
a long pass never holds locks or a snapshot for long, and vacuum can follow it. Every batch
first takes `pg_try_advisory_xact_lock` on the schema's retention key: when another replica of
the service holds it, this one leaves the pass to it, so one replica deletes at a time and the
others never wait or deadlock. Only the service's own role is needed: its own tables, its own
schema, an advisory lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from prometheus_client import Counter, Gauge

from eventshop.platform.observability.logging import get_logger
from eventshop.platform.settings import PlatformSettings

log = get_logger(__name__)

RETENTION_DELETED = Counter(
    "eventshop_retention_deleted_total",
    "Rows deleted after their window: inbox, sent outbox rows, idempotency keys",
    ["service", "table"],
)
RETENTION_LAST_PASS = Gauge(
    "eventshop_retention_last_pass_timestamp_seconds",
    "When this process last finished a retention pass (Unix time); the service's newest over "
    "its replicas says whether retention runs at all",
    ["service"],
)


@dataclass(frozen=True)
class Retained:
    """A table the job keeps bounded: rows whose `age_column` is older than the window go."""

    table: str
    age_column: str
    window: Callable[[PlatformSettings], float]


#: what every service's job deletes from, where its schema has the table; the names are fixed
#: here (never taken from input), so they are safe to format into the SQL
RETAINED = (
    Retained("inbox", "handled_at", lambda s: s.retention_inbox_s),
    # only sent rows are here: the unsent ones are in `outbox`, which nothing here deletes from
    Retained("outbox_sent", "sent_at", lambda s: s.retention_outbox_sent_s),
    Retained("idempotency_keys", "created_at", lambda s: s.retention_idempotency_keys_s),
)

PRESENT = """
SELECT relname FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')
  AND relname = ANY($1::text[])
"""


def delete_batch_sql(retained: Retained) -> str:
    """At most $2 rows older than $1 seconds, oldest first. The age is checked again on the
    DELETE itself, so a row changed since the inner SELECT read it is deleted only if it still
    qualifies; SKIP LOCKED passes over rows a transaction is writing."""
    table, column = retained.table, retained.age_column
    return f"""
    DELETE FROM {table} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {table}
        WHERE {column} < now() - make_interval(secs => $1)
        ORDER BY {column} LIMIT $2 FOR UPDATE SKIP LOCKED))
      AND {column} < now() - make_interval(secs => $1)
    """


def lock_key(schema: str) -> int:
    return int.from_bytes(
        hashlib.sha1(f"retention:{schema}".encode()).digest()[:8], "big", signed=True
    )


@dataclass
class PassReport:
    """What one pass did: rows deleted per table, each batch's size, and whether it left the
    rest to another replica that held the lock."""

    deleted: dict[str, int] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)
    yielded: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def retention_pass(
    pool: asyncpg.Pool,
    settings: PlatformSettings,
    *,
    service: str,
    pause_s: float = 0.0,
    on_batch: Callable[[str, int], Any] | None = None,
) -> PassReport:
    """Delete every row past its window, a batch (one transaction) at a time; `on_batch(table,
    n)`, sync or async, is called after each batch commits (tests watch the batches with it)."""
    report = PassReport()
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        present = {r["relname"] for r in await conn.fetch(PRESENT, [t.table for t in RETAINED])}
    key = lock_key(schema)
    for retained in RETAINED:
        if retained.table not in present:
            continue
        sql = delete_batch_sql(retained)
        window_s = retained.window(settings)
        deleted = 0
        started = time.perf_counter()
        while True:
            async with pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key):
                    report.yielded = True  # another replica is deleting now: its pass
                    break
                status = await conn.execute(sql, window_s, settings.retention_batch)
            n = int(status.split()[-1])
            report.batches.append(n)
            deleted += n
            if on_batch is not None and inspect.isawaitable(seen := on_batch(retained.table, n)):
                await seen
            if n < settings.retention_batch:
                break
            if pause_s:
                await asyncio.sleep(pause_s)  # room for the service's own transactions
        report.deleted[retained.table] = deleted
        if deleted:
            RETENTION_DELETED.labels(service, retained.table).inc(deleted)
            log.info(
                "retention.deleted",
                table=retained.table,
                rows=deleted,
                window_s=window_s,
                seconds=round(time.perf_counter() - started, 3),
            )
        if report.yielded:
            log.info("retention.yielded", table=retained.table, reason="another replica holds it")
            break
    RETENTION_LAST_PASS.labels(service).set(time.time())
    return report


class Retaining(Protocol):
    """What the job needs of a service's context (platform/service.py's ServiceContext)."""

    name: str
    platform: PlatformSettings
    pool: asyncpg.Pool


async def keep_tables_bounded(ctx: Retaining) -> None:
    """A pass every `retention_interval_s` until cancelled; a failed pass (the database away)
    is logged and tried at the next. The first waits a random part of the interval (at most a
    minute), so replicas started together do not all try at once."""
    settings = ctx.platform
    await asyncio.sleep(random.uniform(0, min(settings.retention_interval_s, 60.0)))
    while True:
        try:
            await retention_pass(ctx.pool, settings, service=ctx.name, pause_s=0.01)
        except Exception as exc:
            log.warning("retention.failed", error=repr(exc))
        await asyncio.sleep(settings.retention_interval_s)
