"""The platform on the three-node RabbitMQ cluster (ADR 0013), started as an operator starts it:
`eventshop cluster up`, `EVENTSHOP_BROKER=cluster eventshop up`, then `eventshop chaos
kill-cluster-node`, which kills -9 the node leading the orders queue three times while orders
flow, restarting it each time. Every accepted order must end final, nothing lost, duplicated or
unsent, every invariant true, nothing parked; each failover's time is printed. The platform and
the cluster are stopped at the end whatever happened.

What is real: everything (three RabbitMQ nodes of this machine, beside its own broker which is
never touched; PostgreSQL; Redis; every service a process). Run it under /work/platform.lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventshop.tooling import cluster, supervise

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORDERS = int(os.environ.get("EVENTSHOP_CLUSTER_ORDERS", "180"))
RATE = os.environ.get("EVENTSHOP_CLUSTER_RATE", "2.5")


def eventshop(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTSHOP_BROKER": "cluster"}
    env.pop("EVENTSHOP_AMQP_URL", None)  # the operator's tools find the cluster themselves
    return subprocess.run(
        [str(Path(sys.executable).with_name("eventshop")), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def platform_on_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    layout = supervise.Layout(ROOT)
    supervise.stop_foreign(layout)  # another checkout's platform would hold the same ports
    # this checkout's, if it ran on the machine's broker: the session's other tests use it, so
    # it is started again as it was when this test is done
    was_running = supervise.stop(layout)
    monkeypatch.setenv("EVENTSHOP_BROKER", "cluster")
    monkeypatch.setenv("EVENTSHOP_HOME", str(ROOT))
    try:
        started = eventshop("cluster", "up")
        assert started.returncode == 0, started.stderr[-3000:]
        up = eventshop("up")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield ROOT
    finally:
        eventshop("down")
        eventshop("cluster", "down")
        if was_running:
            monkeypatch.delenv("EVENTSHOP_BROKER")
            supervise.start(layout)
            asyncio.run(supervise.wait_ready(timeout_s=180))


def test_the_node_leading_the_orders_queue_killed_three_times_loses_nothing(
    platform_on_cluster: Path, tmp_path: Path
) -> None:
    # every queue of the platform is replicated on the three nodes
    views = {v.name: v for v in cluster.queue_views(platform_on_cluster)}
    nodes = sorted(n.name for n in cluster.nodes(platform_on_cluster))
    assert views["orders"].type == "quorum" and views["orders"].members == nodes

    results = tmp_path / "results.jsonl"
    done = eventshop(
        "chaos", "kill-cluster-node", "--orders", str(ORDERS), "--rate", RATE, "--seed", "7",
        "--settle", "120", "--results", str(results),
    )  # fmt: skip
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no result: {done.stdout[-2000:]} {done.stderr[-3000:]}")
    failovers = [(f["target"], f["failover_s"], f["flowing_s"]) for f in result["faults"]]
    print("\nfailovers (node killed, s to a new leader, s to an order placed after it final):")
    for target, leader_s, flowing_s in failovers:
        print(f"  {target}: {leader_s} s, {flowing_s} s")
    print(json.dumps(result))

    assert len(result["faults"]) == 3, result["faults"]
    assert all(f["failover_s"] is not None and f["flowing_s"] is not None for f in result["faults"])
    assert result["accepted"] + result["refused"] == ORDERS and result["unanswered"] == 0
    assert result["final"] == result["accepted"]
    assert (result["lost"], result["duplicated"], result["unexpected"], result["stuck"]) == (
        0, 0, 0, 0,
    ), result["examples"]  # fmt: skip
    assert result["violations"] == {} and result["unsent"] == {}
    assert result["parked"] == {"expected": 0, "actual": 0}
    assert result["ok"], result
    # the restarted nodes are members again, every one online
    views = {v.name: v for v in cluster.queue_views(platform_on_cluster)}
    assert views["orders"].members == nodes
