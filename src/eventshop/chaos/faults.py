"""The scenarios' faults, on the process platform of this machine: what each does, when (drawn
from the seed), and how long the platform took to be ready again after it.

Each scenario is an async function of a `Stage`; it runs while the load places orders and
returns the faults it injected. Everything it breaks it mends before it returns (or, if it is
cancelled, in its `finally`): the machine's services are started again with the project's own
set-up, scripts/ensure-infra.sh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from eventshop.ops.parked import CONSUMING
from eventshop.platform.bus.node import connect
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import direct_exchange_of
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS, PORTS
from eventshop.tooling import cluster, supervise

#: the services whose queues are consumed (poison goes there)
CONSUMERS = tuple(CONSUMING)


@dataclass
class Fault:
    name: str
    target: str
    at_s: float
    until_s: float | None = None
    #: seconds from the fault's end until every service answered ready again
    recovered_s: float | None = None
    #: a broker node killed: seconds until another node led the queue it led
    failover_s: float | None = None
    #: a broker node killed: seconds until an order placed after the kill was final
    flowing_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Stage:
    """What a scenario needs: the seed's random numbers, the run's clock and length."""

    rng: random.Random
    started: float
    duration_s: float
    root: Path = field(default_factory=supervise.project_root)
    #: messages the scenario put in parking lots on purpose
    parked_expected: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    async def until(self, fraction: float) -> None:
        """Wait until `fraction` of the load's duration has gone by."""
        await asyncio.sleep(max(0.0, self.started + fraction * self.duration_s - time.monotonic()))

    async def recovered(self, fault: Fault, within_s: float = 180.0) -> Fault:
        end = time.monotonic()
        deadline = end + within_s
        while time.monotonic() < deadline:
            if all((await supervise.readiness(list(PORTS))).values()):
                fault.recovered_s = time.monotonic() - end
                break
            await asyncio.sleep(0.25)
        return fault

    def ensure_infra(self) -> None:
        # output to a file, never to a pipe: a server it starts keeps the pipe open for ever
        log = self.root / "var" / "log" / "chaos-ensure-infra.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            subprocess.run(
                [str(self.root / "scripts" / "ensure-infra.sh")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=300, check=False,
            )  # fmt: skip


def _pid_of(service: str) -> int | None:
    layout = supervise.Layout(supervise.project_root())
    ctl = str(Path(sys.executable).with_name("supervisorctl"))
    out = subprocess.run(
        [ctl, "-c", str(layout.conf), "pid", service], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return int(out) if out.isdigit() and int(out) > 0 else None


def _pgrep(pattern: str) -> list[int]:
    """This machine's processes matching `pattern`, never a container's (the compose
    platform's broker is a beam.smp too, and is not what the scenario breaks)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if not _in_container(int(p))]


def _in_container(pid: int) -> bool:
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return "docker" in cgroups or "containerd" in cgroups


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def kill_services(stage: Stage) -> list[Fault]:
    """A random service killed -9 every few seconds (its supervisor starts it again)."""
    recovering: list[asyncio.Task[Fault]] = []
    await stage.until(0.1)
    while stage.now() < 0.8 * stage.duration_s:
        service = stage.rng.choice(BACKENDS)
        pid = _pid_of(service)
        if pid is not None:
            _kill([pid], signal.SIGKILL)
            fault = Fault("kill -9", service, stage.now(), stage.now())
            recovering.append(asyncio.create_task(stage.recovered(fault)))
        await asyncio.sleep(stage.rng.uniform(2.0, 5.0))
    return list(await asyncio.gather(*recovering))


async def kill_broker(stage: Stage) -> list[Fault]:
    """RabbitMQ killed -9 a third of the way in, started again after a few seconds."""
    await stage.until(stage.rng.uniform(0.25, 0.4))
    fault = Fault("kill -9", "rabbitmq", stage.now())
    try:
        _kill(_pgrep("beam.smp"), signal.SIGKILL)
        await asyncio.sleep(3)
    finally:
        await asyncio.to_thread(stage.ensure_infra)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def restart_postgres(stage: Stage) -> list[Fault]:
    """PostgreSQL stopped abruptly (-m immediate: no checkpoint, every connection cut) and
    started again."""
    await stage.until(stage.rng.uniform(0.25, 0.4))
    version = _pg_version()
    fault = Fault("restart -m immediate", "postgresql", stage.now())
    try:
        await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m",
             "immediate"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        await asyncio.sleep(2)
    finally:
        await asyncio.to_thread(stage.ensure_infra)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


def _pg_version() -> str:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    return out.split()[0] if out.split() else "15"


async def freeze(stage: Stage) -> list[Fault]:
    """A consuming service frozen (SIGSTOP) for 20 s, longer than an order's time-out (the
    demo profile's 10 s), then resumed: its connections stall, its work comes late."""
    await stage.until(0.2)
    service = stage.rng.choice(("payments", "inventory", "orders"))
    pid = _pid_of(service)
    fault = Fault("SIGSTOP 20 s", service, stage.now())
    if pid is not None:
        try:
            _kill([pid], signal.SIGSTOP)
            await asyncio.sleep(20)
        finally:
            _kill([pid], signal.SIGCONT)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def stop_redis(stage: Stage) -> list[Fault]:
    """Redis stopped for 10 s (the gateway's sessions and rate limits), then started again."""
    await stage.until(0.3)
    fault = Fault("shutdown", "redis", stage.now())
    try:
        await asyncio.to_thread(
            subprocess.run, ["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        await asyncio.sleep(10)
    finally:
        await asyncio.to_thread(stage.ensure_infra)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def poison(stage: Stage, count: int = 5) -> list[Fault]:
    """Messages no service can read, dropped into the consumers' queues amid the load (as the
    operator): each must be parked at once, and nothing else."""
    settings = PlatformSettings()
    faults = []
    conn = await connect(settings.amqp_url)
    try:
        publisher = Publisher(conn, settings.exchange, impersonate=True)
        await publisher.start()
        for i in range(count):
            await stage.until(0.2 + 0.6 * i / count)
            service = stage.rng.choice(CONSUMERS)
            message = aio_pika.Message(
                b"\x00 not an event",
                message_id=f"chaos-poison-{stage.rng.getrandbits(48):012x}",
                type="chaos.poison",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await publisher.publish(service, message, via=direct_exchange_of(service))
            faults.append(Fault("poison message", service, stage.now(), stage.now()))
            stage.parked_expected += 1
        await publisher.close()
    finally:
        await conn.close()
    return faults


async def kill_cluster_node(stage: Stage, kills: int = 3) -> list[Fault]:
    """On the three-node cluster (EVENTSHOP_BROKER=cluster): the node leading the orders
    service's queue killed -9, `kills` times while orders flow. Each time the services must move
    to the other nodes by themselves; the fault records how long until another node led the
    queue and until an order placed after the kill was final. The node is then started again,
    and the next kill waits until every quorum queue has its three members online again (with
    two nodes down, no queue would have a majority)."""
    if not cluster.selected():
        raise RuntimeError("kill-cluster-node needs the platform on the cluster: EVENTSHOP_BROKER")
    root = stage.root
    faults = []
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        for i in range(kills):
            await stage.until(0.05 + 0.3 * i)
            await _every_member_online(root)
            leader = await asyncio.to_thread(cluster.leader_of, root, "orders")
            if leader is None:
                raise RuntimeError("the orders queue has no leader")
            kill_at = await db.fetchval("SELECT now()")
            fault = Fault("kill -9", leader, stage.now())
            killed = time.monotonic()
            cluster.kill(cluster.node_named(root, leader))
            while (now_leading := await asyncio.to_thread(
                cluster.leader_of, root, "orders", leader
            )) in (None, leader):  # fmt: skip
                if time.monotonic() - killed > 120:
                    raise RuntimeError(f"no new leader of orders 120 s after {leader} died")
                await asyncio.sleep(0.1)
            fault.failover_s = time.monotonic() - killed
            fault.target = f"{leader} (then {now_leading})"
            while time.monotonic() - killed < 120:
                if await db.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM orders.orders WHERE created_at > $1"
                    " AND status IN ('CONFIRMED', 'CANCELLED'))",
                    kill_at,
                ):
                    fault.flowing_s = time.monotonic() - killed
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(cluster.up, root, _quiet)
            fault.until_s = stage.now()
            faults.append(await stage.recovered(fault))
    finally:
        await db.close()
        await asyncio.to_thread(cluster.up, root, _quiet)  # whatever happened: all three again
    return faults


def _quiet(_: str) -> None:
    return None


async def _every_member_online(root: Path, within_s: float = 180.0) -> None:
    """Every quorum queue of the platform with all its members online (a restarted node has
    caught up with the log it missed), or an error after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        views = await asyncio.to_thread(cluster.queue_views, root)
        lagging = [v.name for v in views if v.type == "quorum" and v.online != v.members]
        if not lagging and views:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"quorum queues without all their members online: {lagging}")
        await asyncio.sleep(0.5)


SCENARIOS: dict[str, Callable[[Stage], Coroutine[Any, Any, list[Fault]]]] = {
    "kill-services": kill_services,
    "kill-broker": kill_broker,
    "restart-postgres": restart_postgres,
    "freeze": freeze,
    "stop-redis": stop_redis,
    "poison": poison,
}
#: the scenarios that need the platform on the three-node cluster (`eventshop chaos all` runs
#: them only there; the others kill or stop the machine's broker, not the cluster's)
CLUSTER_SCENARIOS: dict[str, Callable[[Stage], Coroutine[Any, Any, list[Fault]]]] = {
    "kill-cluster-node": kill_cluster_node,
}
