"""The scenarios' faults: what each does, when (drawn from the seed), and how long the platform
took to be ready again after it.

Each scenario is an async function of a `Stage`; it runs while the load places orders and
returns the faults it injected. Everything it breaks it mends before it returns (or, if it is
cancelled, in its `finally`). What it breaks it breaks through the stage's `Platform`: the
process platform of this machine (`ProcessPlatform`, below: supervisord's processes, the
machine's RabbitMQ, PostgreSQL and Redis, started again with the project's own set-up,
scripts/ensure-infra.sh) or the compose platform's containers (chaos/compose.py). A platform
that cannot carry a scenario says why (`Platform.refusal`).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from supervisor.datatypes import dict_of_key_value_pairs

from eventshop.chaos.proxy import FaultProxy, upstream_of, via_proxy
from eventshop.ops.parked import CONSUMING
from eventshop.platform.bus.node import connect
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import direct_exchange_of
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS, PORTS
from eventshop.tooling import cluster, supervise
from eventshop.tooling.shopclient import API

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
    #: where the faults land (the process platform unless told)
    platform: Platform = field(default_factory=lambda: ProcessPlatform())
    #: the operator's, reaching the platform's broker and database from here (`Platform.open`)
    settings: PlatformSettings = field(default_factory=PlatformSettings)
    #: messages the scenario put in parking lots on purpose
    parked_expected: int = 0
    #: outcomes of orders (as the checker names them) that mean the scenario found a fault
    unwanted_outcomes: set[str] = field(default_factory=set)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def until(self, fraction: float) -> None:
        """Wait until `fraction` of the load's duration has gone by."""
        await asyncio.sleep(max(0.0, self.started + fraction * self.duration_s - time.monotonic()))

    async def recovered(self, fault: Fault, within_s: float = 180.0) -> Fault:
        end = time.monotonic()
        deadline = end + within_s
        while time.monotonic() < deadline:
            if await self.platform.ready():
                fault.recovered_s = time.monotonic() - end
                break
            await asyncio.sleep(0.25)
        return fault

    def ensure_infra(self) -> None:
        ensure_infra(self.root)


def ensure_infra(root: Path) -> None:
    """The machine's RabbitMQ, PostgreSQL and Redis running again (scripts/ensure-infra.sh)."""
    # output to a file, never to a pipe: a server it starts keeps the pipe open for ever
    log = root / "var" / "log" / "chaos-ensure-infra.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.run(
            [str(root / "scripts" / "ensure-infra.sh")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=300, check=False,
        )  # fmt: skip


@dataclass
class Outage:
    """A server of the platform's taken away and given back: how (the fault's name), which,
    and the two blocking calls that do it."""

    how: str
    target: str
    stop: Callable[[], object]
    start: Callable[[], object]


class Platform(Protocol):
    """What the scenarios break, and how they see it mended, on one kind of platform."""

    #: `--platform`'s name for it
    name: str
    #: how a frozen service is frozen, as the fault is named ("SIGSTOP", "docker pause")
    freezing: str

    def refusal(self, scenario: str) -> str | None:
        """Why this platform cannot carry `scenario` (None: it can)."""

    async def open(self) -> PlatformSettings:
        """Ready for a run; the operator's settings that reach its broker and database from
        here (the checker's, poison's and duplicate's)."""

    async def close(self) -> None:
        """Whatever `open` set up for the run, taken away."""

    @property
    def api(self) -> str:
        """The gateway's public API, from here."""

    async def ready(self) -> bool:
        """Every service answers ready."""

    def kill_service(self, service: str, rng: random.Random) -> bool:
        """`service` killed -9, to be started again by what supervises it (False: it was not
        running)."""

    def freeze(self, service: str) -> Callable[[], None] | None:
        """`service` stopped where it stands; the call that lets it go on (None: not running)."""

    def broker_outage(self) -> Outage: ...

    def database_outage(self) -> Outage: ...

    def redis_outage(self) -> Outage: ...


def _pid_of(service: str) -> int | None:
    """A running process of `service`: a random one of its replicas when it has several."""
    pids = supervise.pids_of(supervise.Layout(supervise.project_root()), service)
    return random.choice(pids) if pids else None


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
        if pid <= 0:  # 0 or -1 would signal our own process group or every process
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class ProcessPlatform:
    """The process platform of this machine (`eventshop up`): services under supervisord, the
    machine's own RabbitMQ, PostgreSQL and Redis."""

    name = "processes"
    freezing = "SIGSTOP"

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or supervise.project_root()

    def refusal(self, scenario: str) -> str | None:
        return None

    async def open(self) -> PlatformSettings:
        return PlatformSettings()

    async def close(self) -> None:
        pass

    @property
    def api(self) -> str:
        return API

    async def ready(self) -> bool:
        return all((await supervise.readiness(list(PORTS))).values())

    def kill_service(self, service: str, rng: random.Random) -> bool:
        pid = _pid_of(service)
        if pid is None:
            return False
        _kill([pid], signal.SIGKILL)
        return True

    def freeze(self, service: str) -> Callable[[], None] | None:
        pid = _pid_of(service)
        if pid is None:
            return None
        _kill([pid], signal.SIGSTOP)
        return lambda: _kill([pid], signal.SIGCONT)

    def broker_outage(self) -> Outage:
        return Outage(
            "kill -9", "rabbitmq", lambda: _kill(_pgrep("beam.smp"), signal.SIGKILL),
            lambda: ensure_infra(self.root),
        )  # fmt: skip

    def database_outage(self) -> Outage:
        version = _pg_version()
        return Outage(
            "restart -m immediate", "postgresql",
            lambda: subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m",
                 "immediate"],
                capture_output=True, timeout=120, check=False,
            ),
            lambda: ensure_infra(self.root),
        )  # fmt: skip

    def redis_outage(self) -> Outage:
        return Outage(
            "shutdown", "redis",
            lambda: subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"],
                capture_output=True, timeout=30, check=False,
            ),
            lambda: ensure_infra(self.root),
        )  # fmt: skip


async def _outage(stage: Stage, outage: Outage, hold_s: float) -> list[Fault]:
    """The shape of kill-broker, restart-postgres and stop-redis: a server away for `hold_s`,
    then given back (whatever happened meanwhile), then the time until every service is ready."""
    fault = Fault(outage.how, outage.target, stage.now())
    try:
        await asyncio.to_thread(outage.stop)
        await asyncio.sleep(hold_s)
    finally:
        await asyncio.to_thread(outage.start)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def kill_services(stage: Stage) -> list[Fault]:
    """A random service killed -9 every few seconds (its supervisor starts it again)."""
    recovering: list[asyncio.Task[Fault]] = []
    await stage.until(0.1)
    while stage.now() < 0.8 * stage.duration_s:
        service = stage.rng.choice(BACKENDS)
        if await asyncio.to_thread(stage.platform.kill_service, service, stage.rng):
            fault = Fault("kill -9", service, stage.now(), stage.now())
            recovering.append(asyncio.create_task(stage.recovered(fault)))
        await asyncio.sleep(stage.rng.uniform(2.0, 5.0))
    return list(await asyncio.gather(*recovering))


async def kill_broker(stage: Stage) -> list[Fault]:
    """RabbitMQ killed -9 a third of the way in, started again after a few seconds."""
    await stage.until(stage.rng.uniform(0.25, 0.4))
    return await _outage(stage, await asyncio.to_thread(stage.platform.broker_outage), hold_s=3)


async def restart_postgres(stage: Stage) -> list[Fault]:
    """PostgreSQL stopped abruptly (-m immediate: no checkpoint, every connection cut) and
    started again."""
    await stage.until(stage.rng.uniform(0.25, 0.4))
    return await _outage(stage, await asyncio.to_thread(stage.platform.database_outage), hold_s=2)


def _pg_version() -> str:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    return out.split()[0] if out.split() else "15"


async def freeze(stage: Stage) -> list[Fault]:
    """A consuming service frozen (SIGSTOP) for 20 s, longer than an order's time-out (the
    demo profile's 10 s), then resumed: its connections stall, its work comes late."""
    await stage.until(0.2)
    service = stage.rng.choice(("payments", "inventory", "orders"))
    fault = Fault(f"{stage.platform.freezing} 20 s", service, stage.now())
    thaw = await asyncio.to_thread(stage.platform.freeze, service)
    if thaw is not None:
        try:
            await asyncio.sleep(20)
        finally:
            await asyncio.to_thread(thaw)
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def stop_redis(stage: Stage) -> list[Fault]:
    """Redis stopped for 10 s (the gateway's sessions and rate limits), then started again."""
    await stage.until(0.3)
    return await _outage(stage, await asyncio.to_thread(stage.platform.redis_outage), hold_s=10)


async def poison(stage: Stage, count: int = 5) -> list[Fault]:
    """Messages no service can read, dropped into the consumers' queues amid the load (as the
    operator): each must be parked at once, and nothing else."""
    settings = stage.settings
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


# -- a service out of supervisord's hands ----------------------------------------------------
def program_environment(layout: supervise.Layout, service: str) -> dict[str, str]:
    """The environment supervisord gives `service` (its broker and database URLs among it)."""
    conf = configparser.RawConfigParser()
    conf.read(layout.conf)
    pairs = dict_of_key_value_pairs(conf.get(f"program:{service}", "environment", fallback=""))
    return {str(k): str(v) for k, v in pairs.items()}


@contextlib.asynccontextmanager
async def detached(
    stage: Stage, service: str, change: Callable[[dict[str, str]], dict[str, str]]
) -> AsyncIterator[None]:
    """`service` stopped under supervisord and run by the scenario instead, with its environment
    changed (its addresses pointed at a fault proxy, its clock skewed), until the block ends;
    then stopped and given back to supervisord. Its output goes to var/log/chaos-<service>.log."""
    layout = supervise.Layout(stage.root)
    env = {**os.environ, **change(program_environment(layout, service))}
    await asyncio.to_thread(supervise.stop_service, layout, service)
    eventshop = str(Path(sys.executable).with_name("eventshop"))
    with (layout.logs / f"chaos-{service}.log").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            eventshop, "run", service, env=env, cwd=stage.root, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        ready = await supervise.wait_ready([service], timeout_s=60)
        if not all(ready.values()):
            raise RuntimeError(f"{service}, run by the scenario, did not get ready")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await asyncio.to_thread(supervise.start_service, layout, service)


async def network(stage: Stage) -> list[Fault]:
    """A service's links to the broker and the database through a fault proxy (chaos/proxy.py):
    latency with jitter, a black hole for 30 s, every connection reset, then a slow link."""
    service = stage.rng.choice(("orders", "inventory", "payments"))
    env = program_environment(supervise.Layout(stage.root), service)
    amqp = await FaultProxy(upstream_of(env["EVENTSHOP_AMQP_URL"], 5672), rng=stage.rng).start()
    db = await FaultProxy(upstream_of(env["EVENTSHOP_DATABASE_URL"], 5432), rng=stage.rng).start()
    links = (amqp, db)

    def via_proxies(env: dict[str, str]) -> dict[str, str]:
        return {
            **env,
            "EVENTSHOP_AMQP_URL": via_proxy(env["EVENTSHOP_AMQP_URL"], amqp.port),
            "EVENTSHOP_DATABASE_URL": via_proxy(env["EVENTSHOP_DATABASE_URL"], db.port),
        }

    faults: list[Fault] = []
    spell = max(5.0, 0.15 * stage.duration_s)

    async def fault(name: str, seconds: float, *apply: Callable[[FaultProxy], object]) -> None:
        f = Fault(name, f"{service} to broker and database", stage.now())
        for link in links:
            for a in apply:
                a(link)
        await asyncio.sleep(seconds)
        for link in links:
            link.heal()
        f.until_s = stage.now()
        faults.append(await stage.recovered(f))

    try:
        async with detached(stage, service, via_proxies):
            await stage.until(0.1)
            await fault("latency 40 ms ± 30 ms", spell, lambda p: p.latency(0.040, 0.030))
            await fault("black hole 30 s", 30.0, FaultProxy.black_hole)
            for _ in range(3):
                await fault("connection reset", 2.0, FaultProxy.reset)
            await fault("slow link 16 KB/s", spell, lambda p: p.bandwidth(16 * 1024))
    finally:
        for link in links:
            await link.close()
    return faults


def _faketime_library() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed: scripts/ensure-infra.sh installs it")
    return found[0]


async def clock_skew(stage: Stage) -> list[Fault]:
    """orders' clock 20 s behind the database's and payments' 20 s ahead (libfaketime), for
    most of the run (20 s at least): within the 30 s the gateway's identity proofs allow
    (PROOF_MAX_AGE_S; beyond it a service refuses every call, and the gateway answers 503).
    Whatever decides by time must decide by one clock, the database's: an order cancelled for
    time-out here is a fault the scenario found."""
    library = _faketime_library()
    stage.unwanted_outcomes.add("CANCELLED (timeout)")

    def skewed(seconds: int) -> Callable[[dict[str, str]], dict[str, str]]:
        def change(env: dict[str, str]) -> dict[str, str]:
            return {
                **env,
                "LD_PRELOAD": library,
                "FAKETIME": f"{seconds:+d}",
                # the event loop's timers keep the real monotonic clock
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            }

        return change

    await stage.until(0.1)
    faults = [
        Fault("clock 20 s behind", "orders", stage.now()),
        Fault("clock 20 s ahead", "payments", stage.now()),
    ]
    async with detached(stage, "orders", skewed(-20)), detached(stage, "payments", skewed(20)):
        # orders placed while the two restarted were retried by the load: they land here
        await asyncio.sleep(max(20.0, 0.7 * stage.duration_s))
    for f in faults:
        f.until_s = stage.now()
    return [await stage.recovered(f) for f in faults]


async def duplicate(stage: Stage) -> list[Fault]:
    """Every event delivered twice: a queue of the operator's bound to the events exchange takes
    each event as it is published and publishes it again as it was (its publisher's user_id,
    signature and id: a copy no consumer can tell from a redelivery), a moment later. Until the
    platform has been quiet for 3 s after the load."""
    settings = stage.settings
    fault = Fault("every event twice", settings.exchange, stage.now())
    copied = 0
    seen: set[str] = set()
    pending: set[asyncio.Task[None]] = set()
    conn = await connect(settings.amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=200)
        exchange = await channel.get_exchange(settings.exchange, ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        last = time.monotonic()

        async def copy(message: AbstractIncomingMessage) -> None:
            nonlocal copied
            await asyncio.sleep(stage.rng.uniform(0.0, 0.5))
            again = aio_pika.Message(
                message.body,
                headers=dict(message.headers),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=message.correlation_id,
                message_id=message.message_id,
                timestamp=message.timestamp,
                type=message.type,
                user_id=message.user_id,
                app_id=message.app_id,
            )
            await exchange.publish(again, routing_key=message.routing_key or "")
            copied += 1
            await message.ack()

        async def take(message: AbstractIncomingMessage) -> None:
            nonlocal last
            last = time.monotonic()
            if message.message_id in seen:  # our own copy, come back through the binding
                await message.ack()
                return
            seen.add(message.message_id or "")
            task = asyncio.create_task(copy(message))
            pending.add(task)
            task.add_done_callback(pending.discard)

        await queue.consume(take)
        await stage.until(1.0)
        while (idle := time.monotonic() - last) < 3.0:  # noqa: ASYNC110 (a quiet time, no event)
            await asyncio.sleep(3.0 - idle)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await conn.close()
    fault.name = f"{copied} events delivered twice"
    fault.until_s = stage.now()
    return [await stage.recovered(fault)]


async def kill_cluster_node(stage: Stage, kills: int = 3) -> list[Fault]:
    """On the three-node cluster (EVENTSHOP_BROKER=cluster): a node killed -9 `kills` times while
    orders flow: the node leading the orders service's queue, except the second time, when it is
    the node most of the services' connections are on (they must move to another node and
    publish there before its queues have new leaders: ADR 0023). Each time the services must
    carry on by themselves, an order cancelled for time-out counting as a failure; the fault
    records how long until a live node led the orders queue and until an order placed after the
    kill was final. The node is then started again, and the next kill waits until every quorum
    queue has its three members online again (with two nodes down, no queue would have a
    majority)."""
    if not cluster.selected():
        raise RuntimeError("kill-cluster-node needs the platform on the cluster: EVENTSHOP_BROKER")
    # a node's death costs the saga a second or two: an order that waits for its time-out
    # (10 s in the demo profile) means the services did not carry on by themselves
    stage.unwanted_outcomes.add("CANCELLED (timeout)")
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
            target, services = leader, ""
            if i == 1:
                held = await asyncio.to_thread(_connections_by_node, root)
                if held:
                    target = max(held, key=lambda name: held[name])
                    services = " (the services' node)"
            kill_at = await db.fetchval("SELECT now()")
            fault = Fault("kill -9", target, stage.now())
            killed = time.monotonic()
            cluster.kill(cluster.node_named(root, target))
            while (now_leading := await asyncio.to_thread(
                cluster.leader_of, root, "orders", target
            )) in (None, target):  # fmt: skip
                if time.monotonic() - killed > 120:
                    raise RuntimeError(f"no live leader of orders 120 s after {target} died")
                await asyncio.sleep(0.1)
            fault.failover_s = time.monotonic() - killed
            fault.target = f"{target}{services} (then orders led by {now_leading})"
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


def _connections_by_node(root: Path) -> dict[str, int]:
    """How many client connections to the platform's vhost each node of the cluster holds
    (node name -> count): a connection's name ends with the address it reached, and each node
    listens on a port of its own."""
    by_port = {n.port: n.name for n in cluster.nodes(root)}
    node = cluster.live_node(root)
    out = cluster.ctl(root, node, "list_connections", "vhost", "name", "--formatter", "json")
    if out.returncode != 0:
        raise RuntimeError(f"list_connections on {node.name}: {out.stderr.strip()}")
    counts: dict[str, int] = {}
    for row in json.loads(out.stdout or "[]"):
        reached = str(row.get("name", "")).rpartition(" -> ")[2]  # "peer -> 127.0.0.1:5681"
        port = reached.rpartition(":")[2]
        name = by_port.get(int(port)) if port.isdigit() else None
        if row.get("vhost") == cluster.VHOST and name is not None:
            counts[name] = counts.get(name, 0) + 1
    return counts


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
    "network": network,
    "clock-skew": clock_skew,
    "duplicate": duplicate,
}
#: the scenarios that need the platform on the three-node cluster (`eventshop chaos all` runs
#: them only there; the others kill or stop the machine's broker, not the cluster's)
CLUSTER_SCENARIOS: dict[str, Callable[[Stage], Coroutine[Any, Any, list[Fault]]]] = {
    "kill-cluster-node": kill_cluster_node,
}
