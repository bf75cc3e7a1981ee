"""A service process for tests/integration/test_delivery_limit.py: the platform's own consumer
(a `BusNode` with a subscription, as the runtime builds one), whose handler kills the process
with `os._exit` when it meets the poison, as a segfault or the OOM killer would: no ack, no
nack, no retry ladder. Each poison delivery is noted in a file first, so the test counts them.

    python -m tests.integration.poison_consumer <service> <schema> <deliveries file> [--cured]

Settings come from the environment (EVENTSHOP_*), as for a service. `--cured`: the poison is
handled like any other ping (its cause fixed, for a replay). SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from eventshop.contracts import Envelope, registry
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus import BusNode, Subscription, UnitOfWork
from eventshop.platform.db import create_pool
from eventshop.platform.settings import PlatformSettings
from tests.integration.helpers import PINGED, record_effect

#: the exit status of a process the poison killed
KILLED = 70
#: the note of the ping that kills its consumer
POISON = "poison"


async def main(service: str, schema: str, deliveries: Path, *, cured: bool) -> None:
    settings = PlatformSettings()
    pool = await create_pool(settings.database_url, schema, max_size=2)

    async def handle(uow: UnitOfWork, env: Envelope, ping: Pinged) -> None:
        if ping.note == POISON and not cured:
            with deliveries.open("a") as f:
                f.write(f"{env.event_id}\n")
            os._exit(KILLED)
        await record_effect(uow, env, ping)

    node = BusNode(
        service=service,
        schema=schema,
        pool=pool,
        registry=registry,
        settings=settings,
        subscription=Subscription(service, {PINGED: handle}, tuple(settings.retry_delays_ms)),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()
        await pool.close()


if __name__ == "__main__":
    service, schema, path = sys.argv[1:4]
    asyncio.run(main(service, schema, Path(path), cured="--cured" in sys.argv[4:]))
