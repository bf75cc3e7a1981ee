"""The chaos verdict's `every_event_archived` check on real PostgreSQL: an event a service sent
that the archive lacks is named; with no sent row kept to compare (the relay deleting them at
once, EVENTSHOP_RETENTION_OUTBOX_SENT_S=0) the check says it could not be made, never passes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from eventshop.chaos.check import NO_SENT_ROWS, not_archived
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus.relay import MOVE_SENT
from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.integration.helpers import commit_pings

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(settings: PlatformSettings) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A connection, and an archive of its own (a schema with `archived_events`)."""
    conn = await asyncpg.connect(settings.database_url)
    archive = f"archive_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE SCHEMA "{archive}"')
    await conn.execute(f'CREATE TABLE "{archive}".archived_events (event_id uuid PRIMARY KEY)')
    try:
        yield conn, archive
    finally:
        await conn.execute(f'DROP SCHEMA "{archive}" CASCADE')
        await conn.close()


async def test_sent_events_missing_from_the_archive_are_named_and_deleted_rows_unverifiable(
    db: tuple[asyncpg.Connection, str], make_schema: SchemaFactory
) -> None:
    conn, archive = db
    since = datetime.now(UTC) - timedelta(seconds=1)
    (a, apool), (b, bpool) = await make_schema("svca"), await make_schema("svcb")
    sent_a = await commit_pings(apool, a, [Pinged(seq=i) for i in range(3)])
    sent_b = await commit_pings(bpool, b, [Pinged(seq=i) for i in range(2)])
    await commit_pings(bpool, b, [Pinged(seq=9)])  # never sent: not the archive's yet

    # nothing sent yet: nothing to compare
    assert await not_archived(conn, [a, b], since, archive) == [NO_SENT_ROWS]

    for pool in (apool, bpool):  # as the relay does once the broker confirms them
        rows = await pool.fetch(
            "SELECT id FROM outbox WHERE event_id = ANY($1::uuid[])",
            [e.event_id for e in (*sent_a, *sent_b)],
        )
        await pool.execute(MOVE_SENT, [r["id"] for r in rows])
    every = sorted(str(e.event_id) for e in (*sent_a, *sent_b))
    assert sorted(await not_archived(conn, [a, b], since, archive)) == every

    await conn.execute(
        f'INSERT INTO "{archive}".archived_events SELECT unnest($1::uuid[])',
        [e.event_id for e in (*sent_a, sent_b[0])],
    )
    assert await not_archived(conn, [a, b], since, archive) == [str(sent_b[1].event_id)]
    # rows of before the run are not this run's
    assert await not_archived(conn, [a, b], datetime.now(UTC) + timedelta(hours=1), archive) == [
        NO_SENT_ROWS
    ]

    # the relay deleting what it sent (a window of 0): nothing left to check against
    for schema in (a, b):
        await conn.execute(f'DELETE FROM "{schema}".outbox_sent')
    assert await not_archived(conn, [a, b], since, archive) == [NO_SENT_ROWS]
