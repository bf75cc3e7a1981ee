"""`eventshop chaos`, run as an operator runs it, against the running platform: every scenario
at a small size (CI's; the README has them at 2,000 orders). Each breaks the machine's own
processes, RabbitMQ, PostgreSQL or Redis, and mends them; each must end with nothing lost,
duplicated, unexpected or stuck, every invariant true, nothing unsent, and exactly the poison
parked. Then the checker itself is shown to see what it must: a lost and a duplicated order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from eventshop.chaos.check import verdict
from eventshop.chaos.faults import SCENARIOS
from eventshop.chaos.load import Placement, Shopper
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling import supervise
from tests.support.chaos import assert_came_through, chaos_verdict

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORDERS = int(os.environ.get("EVENTSHOP_CHAOS_ORDERS", "60"))


def eventshop(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("eventshop")), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_scenario_loses_nothing_duplicates_nothing_and_leaves_nothing_stuck(
    platform: supervise.Layout, scenario: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    done = eventshop(
        "chaos", scenario, "--orders", str(ORDERS), "--rate", "12", "--seed", "7",
        "--settle", "120", "--results", str(results),
    )  # fmt: skip
    result = chaos_verdict(done, results)
    assert_came_through(result, ORDERS)
    # the load goes through the saga's payment path, not mostly through its fraud shortcut (a
    # frozen service may time orders out: that is the scenario's own outcome)
    assert result["outcomes"].get("CANCELLED (fraud)", 0) < result["accepted"] / 10, result[
        "outcomes"
    ]
    assert done.returncode == 0 and result["ok"]
    if scenario == "poison":
        assert result["parked"]["actual"] > 0
        purged = eventshop("dlq", "purge", "--type", "chaos.poison", "--yes")
        assert purged.returncode == 0, purged.stderr


async def test_the_checker_sees_a_lost_and_a_duplicated_order(platform: supervise.Layout) -> None:
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        real = await db.fetchval(
            "SELECT order_id FROM orders.orders WHERE status IN ('CONFIRMED', 'CANCELLED') LIMIT 1"
        )
        assert real is not None, "no final order on the platform yet"
        nobody = Shopper("nobody@example.com", "", f"nobody-{uuid.uuid4().hex}")
        lost = Placement(str(uuid.uuid4()), nobody, [], "tok_visa", order_ids={"no-such-order"})
        doubled = Placement(str(uuid.uuid4()), nobody, [], "tok_visa", order_ids={real, "x"})
        found = await verdict(
            db, [lost, doubled], [nobody.user_id], [], since=await db.fetchval("SELECT now()"),
            settle_s=1,
        )  # fmt: skip
    finally:
        await db.close()
    assert sorted(found.lost) == ["no-such-order", "x"]
    assert found.duplicated == [doubled.key]
    assert not found.ok
