"""Fixtures for tests that drive the whole platform (every service a real process).

What is real: everything. The platform is started with `eventshop up` (supervisord, one process
per service, the demo profile: orders time out after 10 s, the `tok_slow` provider takes 14 s)
against RabbitMQ, PostgreSQL, Redis and the SMTP sink on loopback. If it was already running
from this checkout it is reused and left running; if the tests started it, they stop it.
After every test, the invariants of docs/DESIGN.md §3 are checked over the orders that test placed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from eventshop.platform.settings import PlatformSettings
from eventshop.tooling import supervise
from eventshop.tooling.invariants import check_invariants
from tests.support.shop import Shop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def platform() -> Iterator[supervise.Layout]:
    layout = supervise.Layout(ROOT)
    was_running = supervise.supervisor_running(layout)
    if not was_running:
        # a platform another checkout left running would answer on the same ports with other code
        supervise.stop_foreign(layout)
    supervise.start(layout)
    state = asyncio.run(supervise.wait_ready(timeout_s=120))
    if not all(state.values()):
        logs = "\n".join(
            f"--- {p.name}\n" + p.read_text()[-2000:] for p in sorted(layout.logs.glob("*.log"))
        )
        pytest.fail(f"platform not ready: {state}\n{logs}")
    yield layout
    if not was_running:
        supervise.stop(layout)


@pytest.fixture
async def shop(platform: supervise.Layout) -> AsyncIterator[Shop]:
    async with httpx.AsyncClient(timeout=20.0) as client:
        s = Shop(client)
        yield s
    if s.order_ids:
        await assert_invariants(s.order_ids)


async def assert_invariants(order_ids: list[str], timeout: float = 40.0) -> None:
    """Compensations finish after the final state (a late capture's refund): allow them time."""
    url = PlatformSettings().database_url
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        report = await check_invariants(url, order_ids=order_ids)
        if report.ok:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("invariants violated:\n" + "\n".join(report.violations[:20]))
        await asyncio.sleep(0.5)
