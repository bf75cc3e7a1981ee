"""The bus benchmark (`eventshop bench bus`): events/s through outbox, broker and inbox.

Two measurements in one run, on the same broker, so the ratio between them means something
on a shared, noisy machine:

1. the raw rates of the chosen client (aio-pika, no database): 300-byte persistent messages
   on one quorum queue, up to 1,000 publishes awaiting their confirms, prefetch 1,000, acks
   with multiple=True every 50 messages:
   - publish: one process publishes N messages, each confirmed;
   - consume: one process drains that backlog;
   - end to end: a publisher and a consumer process at the same time, run twice, with
     windows of 1,000 publishes gathered and with a sliding window of 1,000 (a task per
     publish); the faster is `raw_e2e_per_s`, the stricter yardstick.
2. end to end through the platform: a writer process commits N events through the outbox
   (UnitOfWork, 100 events a transaction), a relay process (the real `BusNode` of the
   producing service: OutboxRelay + Publisher) publishes them, a consumer process (the real
   `BusNode` of the consuming service: Consumer with its inbox, prefetch 1,000) handles them,
   one `effects` row per event (no unique key, so a duplicate effect would show), a window's
   rows in one INSERT (`BatchHandler`). The time runs from the writer's start to the commit
   of the last effect; each stage also reports when it had done all N (the last one paced
   the run). Then `lost` (committed events with no effect) and `duplicate_effects` (rows
   beyond one per event) are counted in the database.

Every process runs on uvloop. The CPU time of each (writer, relay, consumer, publisher, the
broker's beam.smp, and the postgres backends serving the benchmark's connections plus the
server's auxiliary processes) is read with psutil before and after each phase; what other
processes spent meanwhile is reported too (a run where they took >10% is flagged NOISY).
Names are random per run (exchange, queues, schemas) and deleted at the end.

The command prints tables to stderr and one JSON object on the last line of stdout.
Child processes are `python -m eventshop.bench.bus <role> <json>`; they say `ready`, wait
for `go` on stdin, and print their result as one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psutil
from pydantic import Field

from eventshop.contracts import Envelope, EventPayload, registry
from eventshop.platform.settings import PlatformSettings

EVENT_TYPE = "bench.pinged"
MESSAGE_SIZE = 300
WINDOW = 1_000
PREFETCH = 1_000
ACK_EVERY = 50
WRITE_BATCH = 100
RAW_MODES = {
    "gather": "windows of 1,000 publishes gathered",
    "sliding": "a sliding window of 1,000",
}


@registry.event(EVENT_TYPE, version=1)
class BenchPinged(EventPayload):
    seq: int = Field(ge=0)
    note: str = ""


# ---------------------------------------------------------------------------------------------
# child processes
# ---------------------------------------------------------------------------------------------


def _say(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def _wait_for(word: str) -> None:
    while True:
        line = await _read_line()
        if line == word:
            return
        if not line:  # the parent went away
            raise SystemExit(2)


async def _raw_publish(cfg: Mapping[str, Any]) -> None:
    """aio-pika as its users drive it at speed, with up to `window` publishes unconfirmed.

    "gather": a window of publishes gathered, then the next; "sliding": a task per publish,
    the next started as soon as a confirm frees a slot.
    """
    import aio_pika

    connection = await aio_pika.connect(cfg["amqp_url"])
    channel = await connection.channel(publisher_confirms=True)
    exchange = channel.default_exchange
    body = os.urandom(cfg["size"] // 2).hex().encode()[: cfg["size"]]
    queue, count, window = cfg["queue"], cfg["count"], cfg["window"]
    failed = 0

    def publish() -> Any:
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        return exchange.publish(message, routing_key=queue)

    _say({"ready": True})
    await _wait_for("go")
    start = time.monotonic()
    if cfg.get("publish_mode", "gather") == "gather":
        for first in range(0, count, window):
            results = await asyncio.gather(
                *(publish() for _ in range(min(window, count - first))), return_exceptions=True
            )
            failed += sum(isinstance(r, BaseException) for r in results)
    else:
        slots = asyncio.Semaphore(window)
        pending: set[asyncio.Task[Any]] = set()

        def done(task: asyncio.Task[Any]) -> None:
            nonlocal failed
            pending.discard(task)
            slots.release()
            if task.cancelled() or task.exception() is not None:
                failed += 1

        for _ in range(count):
            await slots.acquire()
            task = asyncio.ensure_future(publish())
            pending.add(task)
            task.add_done_callback(done)
        while pending:
            await asyncio.wait(list(pending))
    end = time.monotonic()
    _say({"start": start, "end": end, "failed": failed})
    await _wait_for("stop")
    await connection.close()


async def _raw_consume(cfg: Mapping[str, Any]) -> None:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage

    connection = await aio_pika.connect(cfg["amqp_url"])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=cfg["prefetch"])
    queue = await channel.get_queue(cfg["queue"], ensure=False)
    count, ack_every = cfg["count"], cfg["ack_every"]
    finished = asyncio.Event()
    received = 0
    end = 0.0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal received, end
        received += 1
        if received % ack_every == 0 or received == count:
            await message.ack(multiple=True)
        if received == count:
            end = time.monotonic()
            finished.set()

    _say({"ready": True})
    await _wait_for("go")
    start = time.monotonic()
    await queue.consume(on_message)
    await finished.wait()
    _say({"start": start, "end": end, "received": received})
    await _wait_for("stop")
    await connection.close()


async def _writer(cfg: Mapping[str, Any]) -> None:
    from eventshop.platform.db import create_pool
    from eventshop.platform.uow import UnitOfWork

    pool = await create_pool(cfg["database_url"], cfg["schema"], min_size=1, max_size=1)
    count, batch, note = cfg["count"], cfg["batch"], cfg["note"]
    _say({"ready": True})
    await _wait_for("go")
    start = time.monotonic()
    for first in range(0, count, batch):
        async with UnitOfWork.begin(pool, service=cfg["service"]) as uow:
            for seq in range(first, min(count, first + batch)):
                uow.emit(BenchPinged(seq=seq, note=note), aggregate_id=f"bench-{seq}")
    end = time.monotonic()
    _say({"start": start, "end": end})
    await _wait_for("stop")
    await pool.close()


def _settings(cfg: Mapping[str, Any]) -> PlatformSettings:
    return PlatformSettings(
        amqp_url=cfg["amqp_url"],
        database_url=cfg["database_url"],
        exchange=cfg["exchange"],
        prefetch=cfg["prefetch"],
        relay_batch=cfg["relay_batch"],
    )


async def _relay(cfg: Mapping[str, Any]) -> None:
    from eventshop.platform.bus.node import BusNode
    from eventshop.platform.db import create_pool

    # min_size == max_size: every connection is open (and its backend known) before `go`
    pool = await create_pool(cfg["database_url"], cfg["schema"], min_size=4, max_size=4)
    node = BusNode(
        service=cfg["service"], schema=cfg["schema"], pool=pool, registry=registry,
        settings=_settings(cfg),
    )
    await node.start()
    relay = node.relay
    assert relay is not None
    while not relay.is_leader:  # noqa: ASYNC110 - a flag of the relay, no event to wait on
        await asyncio.sleep(0.01)
    _say({"ready": True})
    await _wait_for("go")
    deadline = time.monotonic() + cfg["timeout_s"]
    # a counter of the relay, no event to wait on; a 2 ms poll costs nothing measurable
    while relay.published < cfg["count"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    _say({"end": time.monotonic(), "published": relay.published})
    await _wait_for("stop")
    await node.stop()
    await pool.close()


def effects_handler(*, batched: bool) -> Any:
    """The consumer's handler: one `effects` row per event (no unique key: a duplicate shows).

    Batched, a window's events go in one multi-row INSERT; otherwise one INSERT each.
    """
    from eventshop.platform.bus.consumer import BatchHandler, Delivery
    from eventshop.platform.uow import UnitOfWork

    async def many(events: Sequence[Delivery]) -> None:
        await events[0][0].conn.execute(
            "INSERT INTO effects (event_id, seq) SELECT * FROM unnest($1::uuid[], $2::int[])",
            [env.event_id for _, env, _ in events],
            [ping.seq for _, _, ping in events],
        )

    async def one(uow: UnitOfWork, env: Envelope, ping: BenchPinged) -> None:
        await uow.conn.execute(
            "INSERT INTO effects (event_id, seq) VALUES ($1, $2)", env.event_id, ping.seq
        )

    return BatchHandler(many) if batched else one


async def _consumer(cfg: Mapping[str, Any]) -> None:
    from eventshop.platform.bus.consumer import Subscription
    from eventshop.platform.bus.node import BusNode
    from eventshop.platform.db import create_pool

    pool = await create_pool(cfg["database_url"], cfg["schema"], min_size=4, max_size=4)
    subscription = Subscription(
        cfg["service"], {EVENT_TYPE: effects_handler(batched=cfg["batch_handler"])}
    )
    node = BusNode(
        service=cfg["service"], schema=cfg["schema"], pool=pool, registry=registry,
        settings=_settings(cfg), subscription=subscription,
    )
    await node.start()
    consumer = node.consumer
    assert consumer is not None
    _say({"ready": True})
    await _wait_for("go")
    target = cfg["count"]
    start = time.monotonic()
    deadline = start + cfg["timeout_s"]
    # `stats.handled` counts after each commit and is never below the effects committed; once
    # it reaches the target, the database says whether every effect is there
    while time.monotonic() < deadline:
        if consumer.stats.handled >= target:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects") >= target:
                    break
        await asyncio.sleep(0.002)
    end = time.monotonic()
    stats = consumer.stats
    _say({
        "start": start, "end": end, "handled": stats.handled, "duplicates": stats.duplicates,
        "batches": stats.batches, "retried": stats.retried, "parked": stats.parked,
    })
    await _wait_for("stop")
    await node.stop()
    await pool.close()


ROLES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "raw-publish": _raw_publish,
    "raw-consume": _raw_consume,
    "writer": _writer,
    "relay": _relay,
    "consumer": _consumer,
}


def child_main(argv: Sequence[str]) -> None:
    import uvloop

    from eventshop.platform.observability.logging import configure_logging

    role, cfg = argv[0], json.loads(argv[1])
    configure_logging(f"bench-{role}", level="WARNING", json=True)
    uvloop.run(ROLES[role](cfg))


# ---------------------------------------------------------------------------------------------
# the orchestrator
# ---------------------------------------------------------------------------------------------


class Child:
    """One child process: started, told `go` and `stop`, read one JSON line at a time."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process) -> None:
        self.role = role
        self.proc = proc

    @classmethod
    async def start(cls, role: str, cfg: Mapping[str, Any]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventshop.bench.bus", role, json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(role, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(f"{self.role} process exited ({code}) before answering")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj

    async def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(f"{word}\n".encode())
            await self.proc.stdin.drain()

    async def ready(self, timeout_s: float = 60.0) -> None:
        answer = await self.read(timeout_s)
        if not answer.get("ready"):
            raise RuntimeError(f"{self.role}: unexpected answer {answer}")

    async def finish(self, timeout_s: float = 30.0) -> None:
        await self.tell("stop")
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


# -- CPU accounting ---------------------------------------------------------------------------


def _cpu_of(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def _cpu_by_name(name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] == name and p.info["cpu_times"] is not None:
            t = p.info["cpu_times"]
            out[p.pid] = float(t.user + t.system)
    return out


def _cpu_of_all() -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            out[p.pid] = (p.info["name"] or "?", float(t.user + t.system))
    return out


@dataclass
class CpuSnapshot:
    at: float
    children: dict[str, float]
    processes: dict[int, tuple[str, float]]
    machine: Any  # psutil.cpu_times(): user, system, idle, iowait, irq, softirq, steal, ...

    @classmethod
    def take(cls, children: Mapping[str, int]) -> CpuSnapshot:
        return cls(
            at=time.monotonic(),
            children={role: _cpu_of(pid) for role, pid in children.items()},
            processes=_cpu_of_all(),
            machine=psutil.cpu_times(),
        )

    def since(
        self, before: CpuSnapshot, *, ours: Sequence[int] = (), database: Set[int] = frozenset()
    ) -> dict[str, float]:
        """CPU seconds spent since `before`: per child role, broker, database, and the rest.

        `database` names the postgres processes that count as the benchmark's (its backends
        and the server's auxiliary processes); other postgres backends are "other processes".
        A process that exited in between is missing from `self`: its CPU is not counted.
        """
        spent = {r: max(0.0, t - before.children.get(r, 0.0)) for r, t in self.children.items()}
        by_pid = {
            pid: (name, t - before.processes.get(pid, (name, 0.0))[1])
            for pid, (name, t) in self.processes.items()
        }
        spent["broker"] = sum(t for name, t in by_pid.values() if name == "beam.smp")
        spent["database"] = sum(t for pid, (_, t) in by_pid.items() if pid in database)
        known = {"beam.smp"}
        skip = {os.getpid(), *ours, *database}
        spent["bench"] = by_pid.get(os.getpid(), ("", 0.0))[1]
        spent["other processes"] = sum(
            t for pid, (name, t) in by_pid.items() if name not in known and pid not in skip
        )
        m0, m1 = before.machine, self.machine

        def d(field: str) -> float:
            return float(getattr(m1, field, 0.0) - getattr(m0, field, 0.0))

        spent["kernel irq"] = d("irq") + d("softirq")
        spent["steal"] = d("steal")
        total = sum(m1) - sum(m0)
        spent["machine"] = total - d("idle") - d("iowait")
        spent["wall"] = self.at - before.at
        return spent


async def _database_pids(dsn: str, clients: Sequence[int]) -> set[int]:
    """The postgres backends serving `clients`' connections, and the auxiliary processes.

    A backend is matched to its client by the client's local port (pg_stat_activity's
    client_port); WAL writer, checkpointer, background writer and autovacuum do the work of
    every session, mostly of the one writing the most: here, the benchmark's.
    """
    import asyncpg

    server_port = urlparse(dsn).port or 5432
    ports: set[int] = set()
    for pid in clients:
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == server_port:
                    ports.add(c.laddr.port)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid, client_port, backend_type FROM pg_stat_activity")
    finally:
        await conn.close()
    return {
        r["pid"] for r in rows
        if r["client_port"] in ports or r["backend_type"] != "client backend"
    }


# -- phases ------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    count: int
    seconds: float
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchConfig:
    settings: PlatformSettings
    events: int
    raw_messages: int
    write_batch: int = WRITE_BATCH
    prefetch: int = PREFETCH
    relay_batch: int = 1_000
    batch_handler: bool = True
    raw: bool = True
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def exchange(self) -> str:
        return f"eventshop.bench.{self.tag}"

    @property
    def raw_queue(self) -> str:
        return f"bench_{self.tag}_raw"

    @property
    def producer(self) -> str:
        return f"bench_{self.tag}_out"

    @property
    def consumer(self) -> str:
        return f"bench_{self.tag}_in"

    def child(self, **extra: Any) -> dict[str, Any]:
        s = self.settings
        return {
            "amqp_url": s.amqp_url, "database_url": s.database_url, "exchange": self.exchange,
            "prefetch": self.prefetch, "relay_batch": self.relay_batch, **extra,
        }


def _timeout_for(count: int) -> float:
    return 60.0 + count / 500.0


def _failed(report: dict[str, Any]) -> dict[str, Any]:
    return {"failed": report["failed"]}


async def _alone(
    kind: str,
    role: str,
    cfg: dict[str, Any],
    n: int,
    name: str,
    extra: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: {},
) -> Phase:
    """One child process of `kind` doing its `n` messages alone, timed and its CPU measured
    under `role`."""
    child = await Child.start(kind, cfg)
    try:
        await child.ready()
        before = CpuSnapshot.take({role: child.pid})
        await child.tell("go")
        r = await child.read(_timeout_for(n))
        after = CpuSnapshot.take({role: child.pid})
        cpu = after.since(before, ours=[child.pid])
        return Phase(name, n, r["end"] - r["start"], cpu, extra(r))
    finally:
        await child.finish()


async def _raw_phases(cfg: BenchConfig, say: Callable[[str], None]) -> list[Phase]:
    n = cfg.raw_messages
    base = cfg.child(queue=cfg.raw_queue, count=n, size=MESSAGE_SIZE, window=WINDOW,
                     ack_every=ACK_EVERY, publish_mode="gather")
    phases: list[Phase] = []

    say(f"raw aio-pika: publishing {n:,} messages (confirm window {WINDOW:,})")
    phases.append(await _alone("raw-publish", "publisher", base, n, "raw publish", _failed))

    say(f"raw aio-pika: consuming the backlog of {n:,} (prefetch {PREFETCH:,})")
    phases.append(await _alone("raw-consume", "consumer", base, n, "raw consume"))

    # end to end with both ways of keeping 1,000 publishes in flight; the faster one counts
    for mode in ("gather", "sliding"):
        say(f"raw aio-pika: {n:,} messages end to end, publisher and consumer processes"
            f" ({RAW_MODES[mode]})")
        con = await Child.start("raw-consume", base)
        pub = await Child.start("raw-publish", {**base, "publish_mode": mode})
        try:
            await con.ready()
            await pub.ready()
            roles = {"publisher": pub.pid, "consumer": con.pid}
            before = CpuSnapshot.take(roles)
            await con.tell("go")
            await pub.tell("go")
            rc = await con.read(_timeout_for(n))
            after = CpuSnapshot.take(roles)
            rp = await pub.read(10)
            phases.append(Phase(f"raw end to end, {mode}", n, rc["end"] - rp["start"],
                                after.since(before, ours=list(roles.values())),
                                {"failed": rp["failed"]}))
        finally:
            await asyncio.gather(pub.finish(), con.finish())
    return phases


async def _prepare_schemas(cfg: BenchConfig) -> None:
    from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate

    for schema in (cfg.producer, cfg.consumer):
        pool = await create_pool(cfg.settings.database_url, schema, max_size=1)
        try:
            await migrate(pool, [PLATFORM_MIGRATIONS])
            if schema == cfg.consumer:
                async with pool.acquire() as conn:
                    # no unique key on purpose: a duplicate effect shows as a second row
                    await conn.execute(
                        "CREATE TABLE effects (id bigserial PRIMARY KEY, event_id uuid NOT NULL,"
                        " seq int NOT NULL)"
                    )
        finally:
            await pool.close()


async def _outbox_phase(cfg: BenchConfig, say: Callable[[str], None]) -> Phase:
    import asyncpg

    n = cfg.events
    await _prepare_schemas(cfg)
    # a body about as big as the raw messages: the envelope's JSON is ~250 bytes without a note
    note = "x" * 40
    relay = await Child.start("relay", cfg.child(
        schema=cfg.producer, service=cfg.producer, count=n, timeout_s=_timeout_for(n),
    ))
    consumer = await Child.start("consumer", cfg.child(
        schema=cfg.consumer, service=cfg.consumer, count=n, timeout_s=_timeout_for(n),
        batch_handler=cfg.batch_handler,
    ))
    writer = await Child.start("writer", cfg.child(
        schema=cfg.producer, service=cfg.producer, count=n, batch=cfg.write_batch, note=note,
    ))
    children = [relay, consumer, writer]
    try:
        await asyncio.gather(*(c.ready() for c in children))
        say(f"outbox -> relay -> broker -> consumer + inbox: {n:,} events "
            f"({cfg.write_batch} a transaction, prefetch {cfg.prefetch:,})")
        roles = {"relay": relay.pid, "consumer": consumer.pid, "writer": writer.pid}
        database = await _database_pids(cfg.settings.database_url, list(roles.values()))
        before = CpuSnapshot.take(roles)
        await consumer.tell("go")
        await relay.tell("go")
        await writer.tell("go")
        rc = await consumer.read(_timeout_for(n) + 5)
        after = CpuSnapshot.take(roles)
        rw = await writer.read(10)
        rr = await relay.read(10)
        await asyncio.gather(writer.finish(), consumer.finish(), relay.finish())
    finally:
        for child in children:
            child.kill()

    conn = await asyncpg.connect(cfg.settings.database_url)
    try:
        p, c = cfg.producer, cfg.consumer
        committed = await conn.fetchval(f'SELECT count(*) FROM "{p}".outbox')
        unsent = await conn.fetchval(f'SELECT count(*) FROM "{p}".outbox WHERE sent_at IS NULL')
        rows = await conn.fetchval(f'SELECT count(*) FROM "{c}".effects')
        distinct = await conn.fetchval(
            f'SELECT count(DISTINCT e.event_id) FROM "{c}".effects e'
            f' JOIN "{p}".outbox o USING (event_id)'
        )
        inbox = await conn.fetchval(f'SELECT count(*) FROM "{c}".inbox')
        body = await conn.fetchval(f'SELECT avg(length(body))::int FROM "{p}".outbox')
    finally:
        await conn.close()
    extra = {
        "committed": committed, "unsent": unsent, "effect_rows": rows, "distinct_effects": distinct,
        "inbox_rows": inbox, "lost": committed - distinct, "duplicate_effects": rows - distinct,
        "body_bytes": body,
        # when each stage had done all N, from the writer's start: the last to finish paced it
        "writer_done_s": round(rw["end"] - rw["start"], 3),
        "relay_done_s": round(rr["end"] - rw["start"], 3),
        "consumer_done_s": round(rc["end"] - rw["start"], 3),
        "published": rr["published"], "consumer_batches": rc["batches"],
        "duplicates_absorbed": rc["duplicates"], "retried": rc["retried"], "parked": rc["parked"],
    }
    cpu = after.since(before, ours=list(roles.values()), database=database)
    return Phase("outbox e2e", n, rc["end"] - rw["start"], cpu, extra)


async def _cleanup(cfg: BenchConfig) -> None:
    """Drop the run's schemas, queues and exchange; waits up to a minute for a broker that
    is restarting (another session's tests restart it), so a run cut short leaves nothing."""
    import aio_pika
    import asyncpg

    from eventshop.platform.bus.consumer import Subscription

    try:
        conn = await asyncpg.connect(cfg.settings.database_url)
        try:
            for schema in (cfg.producer, cfg.consumer):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"bench cleanup: schemas {cfg.producer}, {cfg.consumer} left: {exc!r}",
              file=sys.stderr)

    queues = Subscription(cfg.consumer, {EVENT_TYPE: _noop}).queues
    names = [cfg.raw_queue, queues.main, queues.parked,
             *(f"{queues.service}.retry.{d}ms" for d in cfg.settings.retry_delays_ms)]
    deadline = time.monotonic() + 60
    while True:
        try:
            amqp = await aio_pika.connect(cfg.settings.amqp_url)
            break
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            if time.monotonic() > deadline:
                print(f"bench cleanup: queues {names} and exchange {cfg.exchange} left: "
                      f"{exc!r}", file=sys.stderr)
                return
            await asyncio.sleep(1)
    try:
        for name in names:  # a refused delete closes its channel: one channel each
            channel = await amqp.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)
        channel = await amqp.channel()
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.exchange_delete(cfg.exchange)
    finally:
        await amqp.close()


async def _noop(*_: Any) -> None:
    return None


async def _declare_raw_queue(cfg: BenchConfig) -> None:
    import aio_pika

    amqp = await aio_pika.connect(cfg.settings.amqp_url)
    try:
        channel = await amqp.channel()
        await channel.declare_queue(
            cfg.raw_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
    finally:
        await amqp.close()


async def run_bench(cfg: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    phases: list[Phase] = []
    try:
        if cfg.raw:
            await _declare_raw_queue(cfg)
            phases += await _raw_phases(cfg, say)
        phases.append(await _outbox_phase(cfg, say))
    finally:
        await _cleanup(cfg)
    return summarise(cfg, phases)


# -- the report --------------------------------------------------------------------------------

PROCESSES = ("writer", "relay", "consumer", "publisher", "broker", "database")
OUTSIDE = ("bench", "other processes", "kernel irq", "steal")


def _busy(p: Phase, cores: int) -> float:
    return p.cpu["machine"] / (p.cpu["wall"] * cores) if p.cpu["wall"] > 0 else 0.0


def _limit(p: Phase, cores: int) -> str:
    """What limited a phase, in a sentence: the machine, the stage that finished last, the
    process that spent the most CPU per message (and how much of one core that was)."""
    spent = {k: v for k, v in p.cpu.items() if k in PROCESSES}
    top = max(spent, key=lambda k: spent[k])
    total = sum(spent.values()) / p.count * 1e6
    busy = _busy(p, cores)
    state = "CPU-bound: the machine was" if busy > 0.9 else "the machine was"
    text = f"{state} {busy:.0%} busy ({total:.0f} us of CPU per message, {cores} cores)"
    stages = {k: p.extra[f"{k}_done_s"] for k in ("writer", "relay", "consumer")
              if f"{k}_done_s" in p.extra}
    if stages:
        order = sorted(stages, key=lambda k: stages[k])
        last, before = order[-1], order[-2]
        text += (
            f"; the {last} stage paced it, done {stages[last] - stages[before]:.2f} s after the"
            f" {before} (writer {stages['writer']:.2f} s, relay {stages['relay']:.2f} s,"
            f" consumer {stages['consumer']:.2f} s)"
        )
    core = spent[top] / p.seconds
    text += (
        f"; the {top} spent the most CPU, {spent[top] / p.count * 1e6:.0f} us per message,"
        f" {core:.0%} of a core" + (": that process was saturated" if core > 0.85 else "")
    )
    share = _outside_share(p)
    if share > 0.1:
        text += f"; NOISY: processes outside the benchmark took {share:.0%} of the CPU used"
    return text


def _outside_share(p: Phase) -> float:
    """The part of the machine's CPU spent by processes outside the benchmark."""
    return p.cpu["other processes"] / p.cpu["machine"] if p.cpu["machine"] > 0 else 0.0


def summarise(cfg: BenchConfig, phases: list[Phase]) -> dict[str, Any]:
    cores = psutil.cpu_count() or 1
    by = {p.name: p for p in phases}
    e2e = by["outbox e2e"]
    raw_runs = [p for p in phases if p.name.startswith("raw end to end")]
    raw_e2e = max(raw_runs, key=lambda p: p.rate) if raw_runs else None

    def rate(name: str) -> float | None:
        return round(by[name].rate, 1) if name in by else None

    def per_msg(p: Phase) -> dict[str, float]:
        return {k: round(v / p.count * 1e6, 1) for k, v in p.cpu.items() if k in PROCESSES}

    report: dict[str, Any] = {
        "events": e2e.count,
        "seconds": round(e2e.seconds, 3),
        "events_per_s": round(e2e.rate, 1),
        "raw_publish_per_s": rate("raw publish"),
        "raw_consume_per_s": rate("raw consume"),
        "raw_e2e_per_s": round(raw_e2e.rate, 1) if raw_e2e else None,
        "raw_e2e_pattern": raw_e2e.name.rsplit(", ", 1)[-1] if raw_e2e else None,
        "ratio_to_raw_e2e": round(e2e.rate / raw_e2e.rate, 3) if raw_e2e else None,
        "lost": e2e.extra["lost"],
        "duplicate_effects": e2e.extra["duplicate_effects"],
        "cpu_s": {k: round(v, 3) for k, v in e2e.cpu.items() if k in PROCESSES},
        "cpu_us_per_event": per_msg(e2e),
        # CPU of the machine spent outside the measured processes in the same interval
        "cpu_outside_s": {k: round(e2e.cpu[k], 3) for k in OUTSIDE},
        "machine_busy": round(_busy(e2e, cores), 3),
        "outside_share": round(_outside_share(e2e), 3),
        "limit": _limit(e2e, cores),
        "raw_limit": _limit(raw_e2e, cores) if raw_e2e else None,
        "phases": [
            {
                "name": p.name, "messages": p.count, "seconds": round(p.seconds, 3),
                "per_s": round(p.rate, 1), "machine_busy": round(_busy(p, cores), 3),
                "cpu_s": {k: round(v, 3) for k, v in p.cpu.items() if k in PROCESSES},
                "cpu_us_per_message": per_msg(p),
                "cpu_outside_s": {k: round(p.cpu[k], 3) for k in OUTSIDE},
            }
            for p in phases
        ],
        "details": {k: v for k, v in e2e.extra.items() if k not in ("lost", "duplicate_effects")},
        "client": "aio-pika 10.2.1 on uvloop",
        "cores": cores,
        "message_bytes": MESSAGE_SIZE,
        "write_batch": cfg.write_batch,
        "prefetch": cfg.prefetch,
    }
    report["targets_met"] = bool(
        report["events_per_s"] >= 5_000
        and (report["ratio_to_raw_e2e"] or 0) >= 0.6
        and report["lost"] == 0
        and report["duplicate_effects"] == 0
    )
    return report


def print_report(report: Mapping[str, Any], console: Any) -> None:
    """Two tables (rates; CPU per message by process) and the limit, for a human."""
    from rich.table import Table

    phases = report["phases"]
    rates = Table(title=f"bus benchmark: {report['client']}, {report['cores']} cores")
    for col, just in (("phase", "left"), ("messages", "right"), ("seconds", "right"),
                      ("per second", "right"), ("CPU busy", "right")):
        rates.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in phases:
        rates.add_row(p["name"], f"{p['messages']:,}", f"{p['seconds']:.2f}",
                      f"{p['per_s']:,.0f}", f"{p['machine_busy']:.0%}")
    console.print(rates)

    cpu = Table(title="CPU per message, microseconds (seconds in all)")
    cpu.add_column("process")
    for p in phases:
        cpu.add_column(p["name"], justify="right")
    for name in PROCESSES:
        if not any(name in p["cpu_s"] for p in phases):
            continue
        cpu.add_row(name, *(
            f"{p['cpu_us_per_message'][name]:.0f} ({p['cpu_s'][name]:.2f})"
            if name in p["cpu_s"] else "-"
            for p in phases
        ))
    cpu.add_row("all of these", *(f"{sum(p['cpu_us_per_message'].values()):.0f}" for p in phases))
    for name in OUTSIDE:
        cpu.add_row(f"[dim]{name}[/]", *(
            f"[dim]{p['cpu_outside_s'][name] / p['messages'] * 1e6:.0f}"
            f" ({p['cpu_outside_s'][name]:.2f})[/]" for p in phases
        ))
    console.print(cpu)
    d = report["details"]
    ratio = report["ratio_to_raw_e2e"]
    console.print(
        f"end to end through outbox and inbox: [bold]{report['events_per_s']:,.0f} events/s[/]"
        + (f", {ratio:.0%} of the raw client's end-to-end rate" if ratio is not None else "")
        + f"; lost {report['lost']}, duplicate effects {report['duplicate_effects']}"
        f" (committed {d['committed']:,}, effect rows {d['effect_rows']:,},"
        f" {d['consumer_batches']} consumer transactions)"
    )
    console.print(f"limit: {report['limit']}")
    if report["raw_limit"]:
        console.print(f"raw client limit: {report['raw_limit']}")


if __name__ == "__main__":
    child_main(sys.argv[1:])
