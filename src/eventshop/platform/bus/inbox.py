"""The inbox: which events a consumer has handled, recorded in the handler's own transaction.

A consumer records the event ids of a window in one multi-row INSERT .. ON CONFLICT DO NOTHING
RETURNING: the ids it returns are new, the others are duplicates (a redelivery), acknowledged
with no effect. The row commits with the handler's effect, so a redelivered event never takes
effect twice. The table is in platform/migrations/0001_outbox_inbox.sql.
"""

from __future__ import annotations

import operator
import uuid

import asyncpg

_as_int = operator.attrgetter("int")  # what orders UUIDs

INSERT_INBOX_MANY = """
INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
ON CONFLICT DO NOTHING RETURNING event_id
"""
INSERT_INBOX_ONE = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1
"""


async def record_new(
    conn: asyncpg.Connection, consumer: str, event_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Record a window's event ids; returns those not recorded before.

    In id order: two replicas' windows holding the same two events (a relay's republish) wait
    for each other's uncommitted inbox rows in one order, never in a cycle (ADR 0012)."""
    ids = sorted(set(event_ids), key=_as_int)  # UUID's own `<` is Python, this is C
    return {r["event_id"] for r in await conn.fetch(INSERT_INBOX_MANY, consumer, ids)}


async def record_one(conn: asyncpg.Connection, consumer: str, event_id: uuid.UUID) -> bool:
    """Record one event id; False when it was already there (a duplicate)."""
    return bool(await conn.fetchval(INSERT_INBOX_ONE, consumer, event_id))
