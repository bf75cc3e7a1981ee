"""A test service for bus tests that run real processes.

Run as `eventshop run tests.support.app:definition`.

It consumes `selfcheck.pinged` and records one row in `effects` per handled event (no unique
key, so a duplicate effect would show as a second row), then emits `selfcheck.ponged`.
Its name and schema come from EVENTSHOP_TEST_SERVICE / EVENTSHOP_TEST_SCHEMA, its port from
--port; a ping whose note is "slow" takes 50 ms, so a test can kill the process mid-batch.
"""

from __future__ import annotations

import asyncio
import os

from eventshop.contracts import Envelope
from eventshop.contracts.selfcheck import Pinged, Ponged
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.service import ServiceContext, ServiceDefinition


async def on_ping(
    ctx: ServiceContext[None, None], uow: UnitOfWork, env: Envelope, ping: Pinged
) -> None:
    await uow.conn.execute(
        "INSERT INTO effects (event_id, seq) VALUES ($1, $2)", env.event_id, ping.seq
    )
    if ping.note == "slow":
        await asyncio.sleep(0.05)
    uow.emit(Ponged(seq=ping.seq), aggregate_id=env.aggregate_id)


definition: ServiceDefinition[None, None] = ServiceDefinition(
    name=os.environ.get("EVENTSHOP_TEST_SERVICE", "testnode"),
    schema=os.environ.get("EVENTSHOP_TEST_SCHEMA"),
    port=int(os.environ.get("EVENTSHOP_TEST_PORT", "18099")),
    handlers={Pinged: on_ping},
    publishes=[Ponged],
    migrations=["tests.support.migrations"],
)
