"""The platform on the three-node RabbitMQ cluster (ADR 0013), started as an operator starts it:
`eventshop cluster up` (once for the module), `EVENTSHOP_BROKER=cluster eventshop up`, then
`eventshop chaos kill-cluster-node`, which kills -9 a node three times while orders flow (the
node leading the orders queue, then the node the services are connected to, then the leader
again), restarting it each time. Every accepted order must end final, nothing lost,
duplicated or unsent, every invariant true, nothing parked; each failover's time is printed.
The platform and the cluster are stopped at the end whatever happened.

Before it, on the same cluster: the bus's publisher through a channel whose first publish to a
quorum queue found the queue's leader node down (ADR 0023). RabbitMQ 3.10 then nacks every
publish on that channel to that queue while the node stays down; the publisher must take a new
channel and publish again once the queue has a leader elsewhere.

What is real: everything (three RabbitMQ nodes of this machine, beside its own broker which is
never touched; PostgreSQL; Redis; every service a process). Run it under /work/platform.lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.secrets import secret
from eventshop.tooling import cluster, supervise

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORDERS = int(os.environ.get("EVENTSHOP_CLUSTER_ORDERS", "180"))
RATE = os.environ.get("EVENTSHOP_CLUSTER_RATE", "4")


def eventshop(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTSHOP_BROKER": "cluster"}
    env.pop("EVENTSHOP_AMQP_URL", None)  # the operator's tools find the cluster themselves
    return subprocess.run(
        [str(Path(sys.executable).with_name("eventshop")), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster_up() -> Iterator[Path]:
    try:
        started = eventshop("cluster", "up")
        assert started.returncode == 0, started.stderr[-3000:]
        yield ROOT
    finally:
        eventshop("cluster", "down")


@pytest.fixture
def platform_on_cluster(cluster_up: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    layout = supervise.Layout(ROOT)
    supervise.stop_foreign(layout)  # another checkout's platform would hold the same ports
    # this checkout's, if it ran on the machine's broker: the session's other tests use it, so
    # it is started again as it was when this test is done
    was_running = supervise.stop(layout)
    monkeypatch.setenv("EVENTSHOP_BROKER", "cluster")
    monkeypatch.setenv("EVENTSHOP_HOME", str(ROOT))
    try:
        up = eventshop("up")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield cluster_up
    finally:
        eventshop("down")
        if was_running:
            monkeypatch.delenv("EVENTSHOP_BROKER")
            supervise.start(layout)
            asyncio.run(supervise.wait_ready(timeout_s=180))


@pytest.fixture
def probe_vhost(cluster_up: Path) -> Iterator[str]:
    """A vhost of the test's own on the cluster, the cluster's admin allowed on it alone; all
    three nodes running again and the vhost deleted afterwards."""
    vhost = f"probe-{secrets.token_hex(4)}"
    first = cluster.live_node(cluster_up)
    for args in (
        ("add_vhost", vhost),
        ("set_permissions", "-p", vhost, cluster.ADMIN_USER) + (".*",) * 3,
    ):
        done = cluster.ctl(cluster_up, first, *args)
        assert done.returncode == 0, done.stderr
    try:
        yield vhost
    finally:
        cluster.up(cluster_up, say=lambda _: None)
        cluster.ctl(cluster_up, cluster.live_node(cluster_up), "delete_vhost", vhost)


async def test_a_channel_that_first_published_with_the_queues_leader_down_is_renewed(
    cluster_up: Path, probe_vhost: str
) -> None:
    root = cluster_up
    a, b, c = cluster.nodes(root)
    password = quote(secret("amqp-cluster-admin"), safe="")

    def url(node: cluster.Node) -> str:
        return f"amqp://{cluster.ADMIN_USER}:{password}@127.0.0.1:{node.port}/{probe_vhost}"

    # declared through node a, the quorum queue's leader is a
    setup = await aio_pika.connect(url(a))
    channel = await setup.channel()
    events = await channel.declare_exchange("events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("q", durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(events, "#")
    await setup.close()
    assert await asyncio.to_thread(cluster.leader_of, root, "q", None, probe_vhost) == a.name

    connection = await aio_pika.connect(url(b))
    publisher = Publisher(connection, "events")
    await publisher.start()

    def message(n: int) -> list[tuple[str, aio_pika.Message]]:
        return [("probe", aio_pika.Message(str(n).encode(), delivery_mode=2))]

    try:
        # a and c killed: b alone, no majority, the queue keeps a as its leader
        cluster.kill(a)
        cluster.kill(c)
        deadline = time.monotonic() + 60
        while (status := cluster.members(root, [b])) is None or status["running_nodes"] != [b.name]:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
        # the channel's first publish to the queue finds its leader's node down: nacked
        [refused] = await publisher.publish_many(message(1))
        assert refused is not None

        # c back: a majority without a, and a new leader on b or c
        await asyncio.to_thread(cluster.start, root, c.name)
        deadline = time.monotonic() + 60
        while (leader := cluster.leader_of(root, "q", a.name, probe_vhost)) in (None, a.name):
            assert time.monotonic() < deadline, leader
            await asyncio.sleep(0.2)

        # a still down: the publisher's channel asks again and is confirmed
        answers = []
        for n in range(2, 8):
            [error] = await publisher.publish_many(message(n))
            answers.append(error)
            if error is None:
                break
            await asyncio.sleep(0.5)
        assert answers[-1] is None, answers
        assert publisher.renewed >= 1
    finally:
        await publisher.close()
        await connection.close()


def test_three_nodes_killed_in_turn_while_orders_flow_lose_nothing(
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
    print("\nfailovers (node killed, s to a live leader of orders, s to an order after it final):")
    for target, leader_s, flowing_s in failovers:
        print(f"  {target}: {leader_s} s, {flowing_s} s")
    print(json.dumps(result))

    assert len(result["faults"]) == 3, result["faults"]
    # the second kill takes the node the services were connected to (ADR 0023's case)
    assert "(the services' node)" in result["faults"][1]["target"], result["faults"]
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
