"""The end-to-end benchmark (`eventshop bench orders`): orders through the whole platform.

N orders are placed over HTTP through the gateway, as shoppers would, and each one is followed
through the full saga (order.created -> inventory.reserved -> payment.requested ->
payment.succeeded -> order.confirmed, then notifications and loyalty) until its final state.

Load:
- closed loop (default): `--concurrency C` shoppers, each placing its next order as soon as
  the previous POST is answered (not when the order is final);
- open loop: `--rate R` orders/s offered whatever the platform does (Poisson or even arrivals);
  latencies count from the order's scheduled time, so a client or gateway falling behind
  shows in them (no coordinated omission);
- `--half-rate`: after the closed (or open) loop run, a second, open-loop run at half the
  rate of final states the first one reached: the time-to-final target is stated there.

What is measured, per run:
- orders/s placed (POSTs answered 202) and orders/s reaching a final state, over the whole
  run and over its steady middle (10%..90% of the final states);
- p50/p95/p99/max of the POST latency and of the time to the final state. The final state is
  observed on the broker, not by polling: the benchmark binds an exclusive, non-durable queue
  of its own to order.confirmed and order.cancelled on `eventshop.events` and timestamps each
  arrival (costs the platform one more delivery per order, reported apart);
- AMQP messages per order: the run's events are counted in the archive (every event of every
  order carries the correlation id of the POST that started it), and each event type is
  multiplied by the queues bound to it (`rabbitmqctl list_bindings`): 1 publish + N deliveries;
  the broker's share is that rate over its measured limit (MEASURED.md: ~37,000 persistent
  messages/s end to end on this machine);
- database work per order: write transactions (transaction ids assigned: exact, read at
  once), all transactions (pg_stat_database xact_commit, read-only ones included; PostgreSQL
  publishes these statistics late, so they are read after a wait and corrected for the
  platform's idle rate), rows written (and the tables that take most), WAL bytes and syncs,
  and what the outboxes still hold unsent once the run has settled (a stalled relay shows);
- CPU per order of every process (psutil, user + system): each service, the broker, Redis,
  PostgreSQL split by the service whose connection drives each backend, the benchmark client
  itself (reported apart), and the whole machine (what no process explains is "unattributed");
- the invariants of DESIGN §3 over the run's orders, once they have settled.

The platform: started if it is not running, with a benchmark profile (BENCH_ENV: a 5 ms payment
provider, rate limits and the fraud velocity rule out of the way, a 120 s order timeout, 1% of
requests traced) and stopped at the end. If it is running, the profile is applied with
`supervisorctl update` (which restarts the programs whose environment changed: every service,
the profile being in each one's environment) and the previous configuration is put back at the
end the same way; `--as-is` uses it untouched, and the report says which settings of the
profile it runs without. Shoppers, the 500-product catalogue and its stock are made once
and reused by later runs (they are topped up when short).

The command prints a table to stderr and one JSON object on the last line of stdout.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import asyncpg
import httpx
import orjson
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventshop.cli import supervise
from eventshop.cli.demo import ADMIN, ADMIN_PASSWORD
from eventshop.invariants import InvariantReport, check_invariants
from eventshop.platform.settings import PlatformSettings
from eventshop.shopclient import API, call, create_product, log_in, restock

PASSWORD = "bench-password-1"
SKU_PREFIX = "BENCH"
FINAL_EVENTS = ("order.confirmed", "order.cancelled")
#: RabbitMQ's end-to-end limit on this machine for persistent messages (MEASURED.md)
BROKER_LIMIT_MSG_S = 37_000

#: the benchmark profile, on top of supervise.DEMO_ENV: nothing but the platform's own work
#: should bound the rate (a fast payment provider, no rate limit or fraud velocity rule that a
#: benchmark's 50 shoppers would trip, an order timeout that a backlog does not reach), and
#: traces sampled as a production would (1%), not every request and SQL statement
BENCH_ENV = {
    "EVENTSHOP_TRACE_SAMPLE_RATIO": "0.01",
    "EVENTSHOP_PAYMENTS_PROVIDER_LATENCY_MS": "5",
    "EVENTSHOP_PAYMENTS_FRAUD_VELOCITY_MAX_REQUESTS": "1000000000",
    "EVENTSHOP_GATEWAY_RATE_PER_USER": "1000000",
    "EVENTSHOP_GATEWAY_RATE_PER_IP": "1000000",
    "EVENTSHOP_ORDERS_TIMEOUT_S": "120",
}

Say = Callable[[str], object]


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class OrdersBenchConfig:
    orders: int = 2_000
    concurrency: int = 16
    #: offered orders/s (open loop); None: closed loop at `concurrency`
    rate: float | None = None
    arrivals: Literal["poisson", "even"] = "poisson"
    #: then a second, open-loop run at half the final-state rate of the first
    half_rate: bool = False
    products: int = 500
    users: int = 50
    #: each order has 1..max_lines lines (distinct skus), 1..2 units each
    max_lines: int = 3
    #: apply the benchmark profile to a running platform (False: use it as it is)
    configure: bool = True
    #: leave the platform running (with the benchmark profile) at the end
    keep_running: bool = False
    final_timeout_s: float = 180.0
    #: PostgreSQL publishes a backend's statistics up to ~10 s late when it goes idle
    stats_wait_s: float = 11.0
    idle_s: float = 5.0
    seed: int | None = None
    database_url: str = field(default_factory=lambda: PlatformSettings().database_url)
    amqp_url: str = field(default_factory=lambda: PlatformSettings().amqp_url)
    exchange: str = field(default_factory=lambda: PlatformSettings().exchange)


# ---------------------------------------------------------------------------------------------
# the platform
# ---------------------------------------------------------------------------------------------


@dataclass
class PlatformState:
    layout: supervise.Layout
    started: bool = False
    reconfigured: bool = False
    previous_conf: str | None = None
    #: per service, the benchmark settings it runs without (empty: the profile is in effect)
    profile_differences: dict[str, dict[str, str]] = field(default_factory=dict)


def _service_processes() -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        service = _service_of_cmdline(p.info["cmdline"] or [])
        if service is not None:
            found[service] = p
    return found


def _service_of_cmdline(cmd: Sequence[str]) -> str | None:
    for i, part in enumerate(cmd[:-2]):
        if part.endswith("eventshop") and cmd[i + 1] == "run":
            return str(cmd[i + 2])
    return None


def _profile_differences() -> dict[str, dict[str, str]]:
    """Per service, the settings of the benchmark profile its process runs without.

    A service's own settings (EVENTSHOP_<SERVICE>_...) and the shared ones count; another
    service's do not bind it."""
    diffs: dict[str, dict[str, str]] = {}
    prefixes = tuple(f"EVENTSHOP_{s.upper()}_" for s in supervise.SERVICES)
    for service, proc in _service_processes().items():
        mine = f"EVENTSHOP_{service.upper()}_"
        own = {
            k: v for k, v in BENCH_ENV.items() if k.startswith(mine) or not k.startswith(prefixes)
        }
        try:
            env = proc.environ()
        except psutil.Error:
            env = {}
        off = {k: env.get(k, "unset") for k, v in own.items() if env.get(k) != v}
        if off:
            diffs[service] = off
    return diffs


async def _start(layout: supervise.Layout, say: Say) -> None:
    try:
        await asyncio.to_thread(supervise.start, layout, BENCH_ENV, say)
    except (RuntimeError, subprocess.CalledProcessError) as exc:  # PlatformConflictError too
        raise BenchError(f"could not start the platform: {exc}") from None


async def ensure_platform(state: PlatformState, cfg: OrdersBenchConfig, say: Say) -> None:
    """Start the platform or apply the benchmark profile to it, as `cfg` says; `state` records
    what was done, so that `release_platform` can undo it even if this fails half-way."""
    layout = state.layout
    running = await asyncio.to_thread(supervise.supervisor_running, layout)
    if not running:
        say("starting the platform with the benchmark profile")
        await _start(layout, say)
        state.started = True
    elif cfg.configure:
        state.previous_conf = layout.conf.read_text() if layout.conf.exists() else None
        try:
            await _start(layout, say)
        finally:  # the configuration may have changed even if the start failed
            state.reconfigured = layout.conf.read_text() != state.previous_conf
        if state.reconfigured:
            say("the platform was running: benchmark profile applied (changed services restarted)")
    else:
        say("[yellow]using the running platform as it is (--as-is)[/]")
    ready = await supervise.wait_ready(timeout_s=120)
    if not all(ready.values()):
        raise BenchError(f"platform not ready: {ready}; logs in {layout.logs}")
    state.profile_differences = _profile_differences()
    for service, off in sorted(state.profile_differences.items()):
        found = ", ".join(f"{k.removeprefix('EVENTSHOP_')}={v}" for k, v in off.items())
        say(f"[yellow]benchmark profile not in effect: {service} runs with {found}[/]")


async def release_platform(state: PlatformState, cfg: OrdersBenchConfig, say: Say) -> None:
    if cfg.keep_running:
        if state.started or state.reconfigured:
            say("the platform is left running with the benchmark profile (`eventshop down`)")
        return
    if state.started:
        say("stopping the platform (the benchmark started it)")
        await asyncio.to_thread(supervise.stop, state.layout)
    elif state.reconfigured and state.previous_conf is not None:
        say("putting the platform's previous profile back")
        state.layout.conf.write_text(state.previous_conf)
        await asyncio.to_thread(_supervisorctl_update, state.layout)
        await supervise.wait_ready(timeout_s=120)


def _supervisorctl_update(layout: supervise.Layout) -> None:
    supervise._supervisorctl(layout, "update")
    supervise._supervisorctl(layout, "start", "all")


# ---------------------------------------------------------------------------------------------
# the shop: admin, shoppers, catalogue, stock
# ---------------------------------------------------------------------------------------------


@dataclass
class Shop:
    admin: str
    tokens: list[str]
    skus: list[str]


def units_needed(cfg: OrdersBenchConfig) -> int:
    """Units of each sku the runs may take, with a wide margin (at least 3x the mean)."""
    orders = cfg.orders * (2 if cfg.half_rate else 1)
    mean = orders * (1 + cfg.max_lines) / 2 * 1.5 / cfg.products
    return math.ceil(3 * mean + 10 * math.sqrt(mean + 1) + 20)


async def setup_shop(
    client: httpx.AsyncClient, cfg: OrdersBenchConfig, say: Say
) -> tuple[Shop, dict[str, int]]:
    """Shoppers logged in, the catalogue known to catalog, inventory and orders, stock ample.

    Returns the shop and what it did (products created, skus restocked)."""
    admin = await log_in(client, ADMIN, ADMIN_PASSWORD)
    limit = asyncio.Semaphore(16)

    async def bounded(coro: Any) -> Any:
        async with limit:
            return await coro

    tokens = list(
        await asyncio.gather(
            *(
                bounded(log_in(client, f"bench-shopper-{i:03d}@example.com", PASSWORD))
                for i in range(cfg.users)
            )
        )
    )
    skus = [f"{SKU_PREFIX}-{i:04d}" for i in range(cfg.products)]

    async def create(i: int, sku: str) -> bool:
        return await create_product(
            client, admin, sku, f"Bench product {i}", 500 + (i * 37) % 9_500
        )

    created = sum(await asyncio.gather(*(bounded(create(i, s)) for i, s in enumerate(skus))))
    # orders prices a line from its own price list, filled from product.created: wait for it
    deadline = time.monotonic() + 60
    conn = await asyncpg.connect(cfg.database_url)
    try:
        while True:
            known = await conn.fetchval(
                "SELECT count(*) FROM orders.prices WHERE sku = ANY($1::text[]) AND active", skus
            )
            if known == len(skus):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"orders knows only {known} of the {len(skus)} products")
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    need = units_needed(cfg)

    async def top_up(sku: str) -> bool:
        # inventory learns of a product from product.created: 404 until it has
        r = await call(client, "GET", f"/stock/{sku}", token=admin, retry_on=(404, 429, 503))
        available = int(r.json()["available"])
        if available >= need:
            return False
        await restock(client, admin, sku, need - available + need)
        return True

    restocked = sum(await asyncio.gather(*(bounded(top_up(s)) for s in skus)))
    say(
        f"shop: {len(tokens)} shoppers logged in; {len(skus)} products ({created} new), "
        f"{restocked} restocked to at least {need} units"
    )
    return Shop(admin, tokens, skus), {"products_created": created, "skus_restocked": restocked}


# ---------------------------------------------------------------------------------------------
# watching final states on the broker
# ---------------------------------------------------------------------------------------------


@dataclass
class Final:
    at: float
    event_type: str
    reason: str | None


class FinalWatcher:
    """An exclusive queue of the benchmark's own, bound to the final events of the saga."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.finals: dict[str, Final] = {}
        self.duplicates = 0
        self.conflicting = 0
        self.queue_name = ""
        #: why the connection closed under the run (the broker restarted, say); None while open
        self.lost: str | None = None
        self._connection: Any = None

    async def start(self) -> None:
        import aio_pika

        self._connection = await aio_pika.connect(self.amqp_url)
        self._connection.close_callbacks.add(self._on_close)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1_000)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
        self.queue_name = queue.name
        for key in FINAL_EVENTS:
            await queue.bind(self.exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: Any) -> None:
        at = time.monotonic()
        try:
            body = orjson.loads(message.body)
            payload = body["payload"]
            order_id = str(payload["order_id"])
            event_type = str(body.get("event_type") or message.routing_key)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        earlier = self.finals.get(order_id)
        if earlier is not None:
            self.duplicates += 1
            if earlier.event_type != event_type:
                self.conflicting += 1
            return
        self.finals[order_id] = Final(at, event_type, payload.get("reason"))

    def _on_close(self, _sender: object, exc: BaseException | None = None) -> None:
        if self.lost is None:
            self.lost = repr(exc) if exc else "closed"

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._on_close)
            await self._connection.close()


# ---------------------------------------------------------------------------------------------
# what the machine, the broker and the database did
# ---------------------------------------------------------------------------------------------


def _label_of(p: psutil.Process, me: int) -> str | None:
    try:
        name = p.name()
        cmd = p.cmdline()
    except psutil.Error:
        return None
    if p.pid == me:
        return "bench client"
    if name in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"):
        return "rabbitmq"
    if name == "postgres" or (cmd and cmd[0].endswith("/postgres")):
        return "postgres"
    if name == "redis-server":
        return "redis"
    service = _service_of_cmdline(cmd)
    if service is not None:
        return service
    if "eventshop.smtp_sink" in cmd:
        return "smtp-sink"
    if any(part.endswith("supervisord") for part in cmd):
        return "supervisord"
    return None


async def _postgres_owners(conn: asyncpg.Connection, labels: Mapping[int, str]) -> dict[int, str]:
    """postgres backend pid -> the label of the process whose connection it serves."""
    by_port: dict[int, str] = {}
    for pid, label in labels.items():
        if label == "postgres":
            continue
        try:
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == 5432:
                    by_port[c.laddr.port] = label
        except psutil.Error:
            continue
    rows = await conn.fetch(
        "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
    )
    return {int(r["pid"]): by_port[r["client_port"]] for r in rows if r["client_port"] in by_port}


@dataclass
class Snapshot:
    at: float
    cpu: dict[int, tuple[str, float]]
    machine_busy: float
    machine_steal: float
    xid: int
    wal_lsn: int


@dataclass
class PgStats:
    at: float
    xact_commit: int
    xact_rollback: int
    tup_written: int
    wal_sync: int
    wal_write: int
    wal_fpi: int
    #: schema.table -> rows inserted + updated + deleted
    tables: dict[str, int] = field(default_factory=dict)


async def outbox_backlog(conn: asyncpg.Connection) -> dict[str, int]:
    """Events each service's outbox still holds unsent (the run has settled: none expected)."""
    schemas = await conn.fetch(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = 'outbox' AND table_schema = ANY($1::text[])",
        supervise.SERVICES,
    )
    backlog: dict[str, int] = {}
    for row in schemas:
        schema = str(row["table_schema"])
        n = await conn.fetchval(
            # the schema is one of SERVICES, as information_schema names it
            f'SELECT count(*) FROM "{schema}".outbox WHERE sent_at IS NULL'
        )
        if n:
            backlog[schema] = int(n)
    return backlog


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _machine() -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, getattr(t, "steal", 0.0)


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    me = os.getpid()
    labels: dict[int, str] = {}
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter():
        label = _label_of(p, me)
        if label is not None:
            labels[p.pid] = label
            procs[p.pid] = p
    owners = await _postgres_owners(conn, labels)
    # the benchmark's own connection is served by a backend too
    own_backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    owners[own_backend] = "bench client"
    cpu: dict[int, tuple[str, float]] = {}
    for pid, p in procs.items():
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        label = labels[pid]
        if label == "postgres":
            label = f"postgres ({owners.get(pid, 'background')})"
        cpu[pid] = (label, t.user + t.system)
    row = await conn.fetchrow(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xid,"
        " pg_current_wal_lsn()::text AS lsn"
    )
    busy, steal = _machine()
    return Snapshot(time.monotonic(), cpu, busy, steal, int(row["xid"]), _lsn(row["lsn"]))


async def pg_stats(conn: asyncpg.Connection) -> PgStats:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    db = await conn.fetchrow(
        "SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted AS w"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    wal = await conn.fetchrow("SELECT wal_sync, wal_write, wal_fpi FROM pg_stat_wal")
    tables = await conn.fetch(
        "SELECT schemaname || '.' || relname AS t, n_tup_ins + n_tup_upd + n_tup_del AS w"
        " FROM pg_stat_user_tables"
    )
    return PgStats(
        time.monotonic(),
        int(db["xact_commit"]),
        int(db["xact_rollback"]),
        int(db["w"]),
        int(wal["wal_sync"]),
        int(wal["wal_write"]),
        int(wal["wal_fpi"]),
        {str(r["t"]): int(r["w"]) for r in tables},
    )


def cpu_delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU seconds per label between two snapshots (a process born in between counts from 0)."""
    out: dict[str, float] = {}
    for pid, (label, secs) in b.cpu.items():
        before = a.cpu.get(pid)
        if before is not None and before[1] > secs:  # pid reused
            before = None
        out[label] = out.get(label, 0.0) + secs - (before[1] if before else 0.0)
    return out


@dataclass
class Idle:
    """The platform doing nothing (pollers, timers): per second."""

    cpu_s: dict[str, float]
    machine_busy_s: float
    xact_per_s: float
    xid_per_s: float


async def measure_idle(conn: asyncpg.Connection, seconds: float) -> Idle:
    s0, p0 = await snapshot(conn), await pg_stats(conn)
    await asyncio.sleep(seconds)
    s1, p1 = await snapshot(conn), await pg_stats(conn)
    dt = s1.at - s0.at
    return Idle(
        {k: v / dt for k, v in cpu_delta(s0, s1).items()},
        (s1.machine_busy - s0.machine_busy) / dt,
        (p1.xact_commit - p0.xact_commit) / (p1.at - p0.at),
        (s1.xid - s0.xid) / dt,
    )


def _topic_matches(pattern: str, key: str) -> bool:
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def read_bindings(exchange: str) -> list[tuple[str, str]]:
    """(queue, binding key) of every queue bound to the platform's exchange."""
    out = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_bindings",
            "-p",
            supervise.VHOST,
            "source_name",
            "destination_name",
            "destination_kind",
            "routing_key",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise BenchError(f"rabbitmqctl list_bindings: {out.stderr.strip()}")
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.count("\t") == 3]
    return [(r[1], r[3]) for r in rows if r[0] == exchange and r[2] == "queue"]


def deliveries_of(event_type: str, bindings: Sequence[tuple[str, str]], skip: str) -> int:
    """Queues one event of this type is delivered to (a queue bound twice gets it once)."""
    return len({q for q, key in bindings if q != skip and _topic_matches(key, event_type)})


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


@dataclass
class OrderRecord:
    index: int
    correlation_id: str
    body: bytes
    token: str
    key: str
    #: when the order was due (open loop) or its first POST began (closed loop)
    start: float = 0.0
    first_send: float = 0.0
    answered: float = 0.0
    order_id: str | None = None
    attempts: int = 0
    error: str | None = None


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {
        "p50": round(rank(0.50), 1),
        "p95": round(rank(0.95), 1),
        "p99": round(rank(0.99), 1),
        "max": round(s[-1], 1),
    }


def _plans(
    cfg: OrdersBenchConfig, shop: Shop, run: str, phase: str, rng: random.Random
) -> list[OrderRecord]:
    records = []
    for i in range(cfg.orders):
        skus = rng.sample(shop.skus, rng.randint(1, cfg.max_lines))
        body = orjson.dumps(
            {
                "lines": [{"sku": s, "quantity": rng.randint(1, 2)} for s in skus],
                "payment_token": "tok_visa",
            }
        )
        records.append(
            OrderRecord(
                index=i,
                correlation_id=f"bench-{run}-{phase}-{i:06d}",
                body=body,
                token=shop.tokens[i % len(shop.tokens)],
                key=str(uuid.uuid4()),
            )
        )
    return records


async def _place(placer: aiohttp.ClientSession, rec: OrderRecord) -> None:
    """POST one order until it is accepted (202) or refused for good; retries 429/503 and
    transport errors, with the same Idempotency-Key (so never a second order)."""
    headers = {
        "Authorization": f"Bearer {rec.token}",
        "Idempotency-Key": rec.key,
        "X-Correlation-ID": rec.correlation_id,
        "Content-Type": "application/json",
    }
    for attempt in range(50):
        rec.attempts += 1
        if attempt == 0:
            rec.first_send = time.monotonic()
        try:
            async with placer.post(API + "/orders", data=rec.body, headers=headers) as r:
                status, text = r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
            continue
        if status == 202:
            rec.answered = time.monotonic()
            rec.order_id = str(orjson.loads(text)["order_id"])
            rec.error = None
            return
        rec.error = f"{status}: {text[:200]}"
        if status in (429, 503):
            await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
            continue
        return
    return


@dataclass
class PhaseResult:
    name: str
    mode: str
    records: list[OrderRecord]
    watcher_finals: dict[str, Final]
    t0: float
    placed_at: float
    before: Snapshot
    after: Snapshot
    pg_before: PgStats
    pg_after: PgStats
    events: dict[str, int]
    invariants: InvariantReport
    offered_rate: float | None
    outbox_unsent: dict[str, int] = field(default_factory=dict)


async def run_phase(
    *,
    name: str,
    cfg: OrdersBenchConfig,
    shop: Shop,
    run: str,
    rate: float | None,
    placer: aiohttp.ClientSession,
    watcher: FinalWatcher,
    conn: asyncpg.Connection,
    console: Console,
    rng: random.Random,
) -> PhaseResult:
    records = _plans(cfg, shop, run, name, rng)
    mode = (
        f"open loop, {rate:.1f} orders/s offered ({cfg.arrivals})"
        if rate
        else f"closed loop, concurrency {cfg.concurrency}"
    )
    console.print(f"[bold]{name}[/]: {cfg.orders} orders, {mode}")
    pg_before = await pg_stats(conn)
    before = await snapshot(conn)
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        placing = progress.add_task("placed", total=len(records))
        finishing = progress.add_task("final", total=len(records))
        t0 = time.monotonic()

        async def place(rec: OrderRecord) -> None:
            await _place(placer, rec)
            progress.advance(placing)

        if rate is None:
            pending = iter(records)

            async def worker() -> None:
                for rec in pending:
                    rec.start = time.monotonic()
                    await place(rec)

            placing_done: asyncio.Future[Any] = asyncio.gather(
                *(worker() for _ in range(cfg.concurrency))
            )
        else:
            due = 0.0
            for rec in records:
                rec.start = t0 + due
                due += rng.expovariate(rate) if cfg.arrivals == "poisson" else 1.0 / rate

            async def scheduler() -> None:
                tasks = []
                for rec in records:
                    delay = rec.start - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(place(rec)))
                await asyncio.gather(*tasks)

            placing_done = asyncio.ensure_future(scheduler())

        async def follow() -> None:
            deadline: float | None = None
            while True:
                ids = [r.order_id for r in records if r.order_id]
                done = sum(1 for oid in ids if oid in watcher.finals)
                progress.update(finishing, completed=done)
                if watcher.lost is not None:
                    raise BenchError(f"the broker connection was lost: {watcher.lost}")
                if placing_done.done():
                    if done >= len(ids):
                        return
                    deadline = deadline or time.monotonic() + cfg.final_timeout_s
                    if time.monotonic() > deadline:
                        console.print(
                            f"[red]{len(ids) - done} orders not final "
                            f"{cfg.final_timeout_s:.0f} s after the last POST[/]"
                        )
                        return
                await asyncio.sleep(0.2)

        try:
            await asyncio.gather(placing_done, follow())
        except BaseException:
            placing_done.cancel()
            raise
        placed_at = max((r.answered for r in records if r.order_id), default=t0)

    order_ids = [r.order_id for r in records if r.order_id]
    invariants, events = await _settle(conn, cfg, records, order_ids, console)
    after = await snapshot(conn)
    # statistics: wait until every backend has published its own, then correct for idle time
    wait = cfg.stats_wait_s - (time.monotonic() - after.at)
    if wait > 0:
        await asyncio.sleep(wait)
    pg_after = await pg_stats(conn)
    unsent = await outbox_backlog(conn)
    if unsent:
        console.print(f"[red]events left unsent in outboxes: {unsent} (a relay not publishing?)[/]")
    return PhaseResult(
        name=name,
        mode=mode,
        records=records,
        watcher_finals=dict(watcher.finals),
        t0=t0,
        placed_at=placed_at,
        before=before,
        after=after,
        pg_before=pg_before,
        pg_after=pg_after,
        events=events,
        invariants=invariants,
        offered_rate=rate,
        outbox_unsent=unsent,
    )


async def _settle(
    conn: asyncpg.Connection,
    cfg: OrdersBenchConfig,
    records: Sequence[OrderRecord],
    order_ids: list[str],
    console: Console,
    timeout_s: float = 60.0,
) -> tuple[InvariantReport, dict[str, int]]:
    """Wait until the run's work is over: invariants hold (points awarded, compensations done)
    and the archive has stopped receiving the run's events; return both."""
    correlation_ids = [r.correlation_id for r in records]
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] | None = None
    while True:
        report = await check_invariants(cfg.database_url, order_ids=order_ids)
        rows = await conn.fetch(
            "SELECT event_type, count(*) AS n FROM archive.archived_events"
            " WHERE correlation_id = ANY($1::text[]) GROUP BY event_type",
            correlation_ids,
        )
        events = {str(r["event_type"]): int(r["n"]) for r in rows}
        if (report.ok and events == last) or time.monotonic() > deadline:
            if not report.ok:
                console.print(f"[red]invariants still violated after {timeout_s:.0f} s[/]")
            return report, events
        last = events
        await asyncio.sleep(1.0)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

PLATFORM_LABELS_EXCLUDED = ("bench client", "postgres (bench client)")


def phase_report(
    p: PhaseResult,
    idle: Idle,
    bindings: Sequence[tuple[str, str]],
    watcher_queue: str,
) -> dict[str, Any]:
    placed = [r for r in p.records if r.order_id]
    failed = [r for r in p.records if not r.order_id]
    finals = [(r, p.watcher_finals[r.order_id]) for r in placed if r.order_id in p.watcher_finals]
    n = len(placed)
    confirmed = sum(1 for _, f in finals if f.event_type == "order.confirmed")
    reasons = Counter(str(f.reason) for _, f in finals if f.event_type == "order.cancelled")
    last_final = max((f.at for _, f in finals), default=p.t0)
    final_times = sorted(f.at for _, f in finals)
    steady: float | None = None
    if len(final_times) >= 20:
        lo, hi = final_times[len(final_times) // 10], final_times[(len(final_times) * 9) // 10]
        if hi > lo:
            steady = ((len(final_times) * 9) // 10 - len(final_times) // 10) / (hi - lo)
    run_s = max(last_final - p.t0, 1e-9)
    place_s = max(p.placed_at - p.t0, 1e-9)
    window_s = p.after.at - p.before.at
    final_rate = len(finals) / run_s

    # messages: every event of the run, and the queues each type is delivered to
    published = sum(p.events.values())
    delivered = sum(n_ * deliveries_of(t, bindings, watcher_queue) for t, n_ in p.events.items())
    watched = sum(p.events.get(t, 0) for t in FINAL_EVENTS)
    per_order = max(n, 1)
    msgs_per_order = (published + delivered) / per_order
    deliveries_per_order = delivered / per_order

    # CPU: per process group, ms per order; the platform excludes the benchmark's own client
    cpu = cpu_delta(p.before, p.after)
    machine_busy = p.after.machine_busy - p.before.machine_busy
    attributed = sum(cpu.values())
    cpu["unattributed (kernel, others)"] = max(0.0, machine_busy - attributed)
    cpu_ms = {k: round(v * 1000 / per_order, 2) for k, v in sorted(cpu.items())}
    platform_s = sum(
        v
        for k, v in cpu.items()
        if k not in PLATFORM_LABELS_EXCLUDED and not k.startswith("unattributed")
    )
    idle_platform_s = sum(v for k, v in idle.cpu_s.items() if k not in PLATFORM_LABELS_EXCLUDED)
    hottest = max(
        ((k, v) for k, v in cpu.items() if not k.startswith("unattributed")),
        key=lambda kv: kv[1],
        default=("", 0.0),
    )

    # database: write transactions (xids) at once; statistics late, corrected for idle time
    xids = p.after.xid - p.before.xid
    stats_s = p.pg_after.at - p.pg_before.at
    xact = (p.pg_after.xact_commit - p.pg_before.xact_commit) - idle.xact_per_s * max(
        0.0, stats_s - window_s
    )
    post_ms = [(r.answered - r.start) * 1000 for r in placed]
    final_ms = [(f.at - r.start) * 1000 for r, f in finals]
    lag_ms = [(r.first_send - r.start) * 1000 for r in placed] if p.offered_rate else []
    return {
        "phase": p.name,
        "mode": p.mode,
        "offered_rate": round(p.offered_rate, 1) if p.offered_rate else None,
        "orders": len(p.records),
        "placed": n,
        "place_failed": len(failed),
        "place_errors": Counter(str(r.error)[:80] for r in failed).most_common(3),
        "post_retries": sum(r.attempts - 1 for r in p.records),
        "final": len(finals),
        "not_final": n - len(finals),
        "confirmed": confirmed,
        "cancelled": sum(reasons.values()),
        "cancel_reasons": dict(reasons),
        "orders_per_s_placed": round(n / place_s, 1),
        "orders_per_s_final": round(final_rate, 1),
        "orders_per_s_final_steady": round(steady, 1) if steady else None,
        "seconds_placing": round(place_s, 2),
        "seconds_to_last_final": round(run_s, 2),
        "post_ms": percentiles(post_ms),
        "final_ms": percentiles(final_ms),
        "p50_post_ms": percentiles(post_ms)["p50"],
        "p99_post_ms": percentiles(post_ms)["p99"],
        "p50_final_ms": percentiles(final_ms)["p50"],
        "p95_final_ms": percentiles(final_ms)["p95"],
        "p99_final_ms": percentiles(final_ms)["p99"],
        "client_lag_ms": percentiles(lag_ms) if lag_ms else None,
        "events": dict(sorted(p.events.items())),
        "events_per_order": round(published / per_order, 2),
        "amqp_published_per_order": round(published / per_order, 2),
        "amqp_delivered_per_order": round(deliveries_per_order, 2),
        "amqp_messages_per_order": round(msgs_per_order, 2),
        "benchmark_queue_deliveries_per_order": round(watched / per_order, 2),
        "broker_msgs_per_s": round(msgs_per_order * final_rate),
        "broker_fraction": round(msgs_per_order * final_rate / BROKER_LIMIT_MSG_S, 3),
        "broker_fraction_deliveries": round(
            deliveries_per_order * final_rate / BROKER_LIMIT_MSG_S, 3
        ),
        "db_write_commits_per_order": round(xids / per_order, 2),
        "db_xact_commits_per_order": round(xact / per_order, 2),
        "db_rollbacks": p.pg_after.xact_rollback - p.pg_before.xact_rollback,
        "db_rows_written_per_order": round(
            (p.pg_after.tup_written - p.pg_before.tup_written) / per_order, 1
        ),
        "db_rows_written_per_order_by_table": {
            t: round(w / per_order, 2)
            for t, w in sorted(
                ((t, w - p.pg_before.tables.get(t, 0)) for t, w in p.pg_after.tables.items()),
                key=lambda tw: -tw[1],
            )[:15]
            if w > 0
        },
        "wal_bytes_per_order": round((p.after.wal_lsn - p.before.wal_lsn) / per_order),
        "wal_syncs_per_order": round((p.pg_after.wal_sync - p.pg_before.wal_sync) / per_order, 2),
        "wal_full_page_images_per_order": round(
            (p.pg_after.wal_fpi - p.pg_before.wal_fpi) / per_order, 2
        ),
        "cpu_ms_per_order": cpu_ms,
        "cpu_ms_per_order_platform": round(platform_s * 1000 / per_order, 2),
        "cpu_ms_per_order_platform_net_of_idle": round(
            (platform_s - idle_platform_s * window_s) * 1000 / per_order, 2
        ),
        "cpu_ms_per_order_client": round(
            sum(cpu.get(k, 0.0) for k in PLATFORM_LABELS_EXCLUDED) * 1000 / per_order, 2
        ),
        "cpu_ms_per_order_machine": round(machine_busy * 1000 / per_order, 2),
        "cpu_cores_busy": round(machine_busy / window_s, 2),
        "steal_s": round(p.after.machine_steal - p.before.machine_steal, 2),
        "hottest_process": hottest[0],
        "measure_window_s": round(window_s, 2),
        "outbox_unsent": p.outbox_unsent,
        "invariants_ok": p.invariants.ok,
        "violations": p.invariants.violations[:10],
    }


async def run_orders_bench(
    cfg: OrdersBenchConfig, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    say = console.print
    if cfg.orders < 1 or cfg.concurrency < 1 or cfg.products < cfg.max_lines:
        raise BenchError("need at least one order, one shopper and max_lines <= products")
    rng = random.Random(cfg.seed)
    run = uuid.uuid4().hex[:8]
    main = asyncio.current_task()
    if main is not None:  # SIGTERM cancels the run: the `finally` below still cleans up
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    platform = PlatformState(supervise.Layout(supervise.project_root()))
    try:
        await ensure_platform(platform, cfg, say)
        return await _bench(cfg, platform, run, rng, console)
    finally:
        await release_platform(platform, cfg, say)


async def _bench(
    cfg: OrdersBenchConfig,
    platform: PlatformState,
    run: str,
    rng: random.Random,
    console: Console,
) -> dict[str, Any]:
    say = console.print
    in_flight = cfg.concurrency if cfg.rate is None and not cfg.half_rate else 512
    limits = httpx.Limits(
        max_connections=max(cfg.concurrency, in_flight) + 8,
        max_keepalive_connections=max(cfg.concurrency, in_flight) + 8,
    )
    watcher = FinalWatcher(cfg.amqp_url, cfg.exchange)
    conn = await asyncpg.connect(cfg.database_url)
    # The orders themselves go out through aiohttp: the load generator shares the machine's
    # two cores with the platform, and httpx's pool costs several times more CPU per request.
    placing = aiohttp.TCPConnector(
        limit=max(cfg.concurrency, in_flight) + 8,
        keepalive_timeout=4.0,  # uvicorn keeps 5 s
    )
    async with (
        httpx.AsyncClient(timeout=30.0, limits=limits) as client,
        aiohttp.ClientSession(
            connector=placing, timeout=aiohttp.ClientTimeout(total=30.0)
        ) as placer,
    ):
        try:
            shop, setup = await setup_shop(client, cfg, say)
            await watcher.start()
            bindings = await asyncio.to_thread(read_bindings, cfg.exchange)
            say(
                f"watching final states on queue {watcher.queue_name} "
                "(one more delivery per order, reported apart)"
            )
            say(f"letting the platform settle ({cfg.stats_wait_s:.0f} s), then idle baseline")
            await asyncio.sleep(cfg.stats_wait_s)
            idle = await measure_idle(conn, cfg.idle_s)
            phases = [
                await run_phase(
                    name="run",
                    cfg=cfg,
                    shop=shop,
                    run=run,
                    rate=cfg.rate,
                    placer=placer,
                    watcher=watcher,
                    conn=conn,
                    console=console,
                    rng=rng,
                )
            ]
            first = phase_report(phases[0], idle, bindings, watcher.queue_name)
            reports = [first]
            if cfg.half_rate and first["orders_per_s_final"] > 0:
                phases.append(
                    await run_phase(
                        name="half-rate",
                        cfg=cfg,
                        shop=shop,
                        run=run,
                        rate=first["orders_per_s_final"] / 2,
                        placer=placer,
                        watcher=watcher,
                        conn=conn,
                        console=console,
                        rng=rng,
                    )
                )
                reports.append(phase_report(phases[1], idle, bindings, watcher.queue_name))
        finally:
            await watcher.close()
            await conn.close()
    result: dict[str, Any] = dict(first)
    result.pop("phase")
    if len(reports) > 1:
        half = reports[1]
        result["half_rate"] = {k: v for k, v in half.items() if k != "phase"}
        result["p99_final_ms_at_half_rate"] = half["p99_final_ms"]
        result["invariants_ok"] = first["invariants_ok"] and half["invariants_ok"]
    result["duplicate_finals_seen"] = watcher.duplicates
    result["conflicting_finals_seen"] = watcher.conflicting
    result.update(
        {
            "run": run,
            "products": cfg.products,
            "shoppers": cfg.users,
            "max_lines": cfg.max_lines,
            "setup": setup,
            "profile": BENCH_ENV if cfg.configure or platform.started else "as found",
            "profile_in_effect": not platform.profile_differences,
            "profile_differences": platform.profile_differences,
            "idle_platform_cpu_ms_per_s": round(
                sum(v for k, v in idle.cpu_s.items() if k not in PLATFORM_LABELS_EXCLUDED) * 1000
            ),
            "idle_xact_per_s": round(idle.xact_per_s, 1),
            "bindings": sorted({f"{q} <- {k}" for q, k in bindings}),
            "broker_limit_msg_s": BROKER_LIMIT_MSG_S,
            "cores": psutil.cpu_count(),
        }
    )
    return result


def run(cfg: OrdersBenchConfig, console: Console | None = None) -> dict[str, Any]:
    """The benchmark on uvloop (the client's own CPU matters on a small machine)."""
    import importlib.util
    import sys

    import uvloop

    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        # httpcore tries `import sniffio` several times per request; when it is not installed
        # each failed import searches sys.path on disk. None in sys.modules fails it at once.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    try:
        return uvloop.run(run_orders_bench(cfg, console))
    except asyncio.CancelledError:
        raise BenchError("stopped by SIGTERM") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, httpx.HTTPError) as exc:
        # on a shared machine the broker or the database may be restarted under the run
        raise BenchError(f"the run failed: {type(exc).__name__}: {exc}") from exc


def _short_mode(p: Mapping[str, Any]) -> str:
    rate = p.get("offered_rate")
    return f"open {rate}/s" if rate else str(p["mode"]).replace("closed loop, concurrency ", "C=")


def print_report(report: Mapping[str, Any], console: Console) -> None:
    phases: list[Mapping[str, Any]] = [report]
    if "half_rate" in report:
        phases.append(report["half_rate"])
    title = f"bench orders: {report['products']} products, {report['shoppers']} shoppers"
    summary = Table(title=title)
    cpu = Table(title="CPU ms per order, by process (postgres: by the client it serves)")
    for table in (summary, cpu):
        table.add_column("")
        for p in phases:
            table.add_column(_short_mode(p), justify="right")

    def row(label: str, fn: Callable[[Mapping[str, Any]], object]) -> None:
        summary.add_row(label, *(str(fn(p)) for p in phases))

    def pct(p: Mapping[str, Any], key: str) -> str:
        return "/".join(str(v) for v in p[key].values())

    row("placed / failed", lambda p: f"{p['placed']} / {p['place_failed']}")
    row("confirmed/cancelled/not final", lambda p: (
        f"{p['confirmed']}/{p['cancelled']}/{p['not_final']}"
    ))  # fmt: skip
    row("orders/s placed", lambda p: p["orders_per_s_placed"])
    row("orders/s final (steady)", lambda p: (
        f"{p['orders_per_s_final']} ({p['orders_per_s_final_steady']})"
    ))  # fmt: skip
    row("POST ms p50/95/99/max", lambda p: pct(p, "post_ms"))
    row("final ms p50/95/99/max", lambda p: pct(p, "final_ms"))
    row("client lag ms p99", lambda p: p["client_lag_ms"]["p99"] if p["client_lag_ms"] else "-")
    row("events/order", lambda p: p["events_per_order"])
    row("AMQP msgs/order", lambda p: (
        f"{p['amqp_messages_per_order']} = {p['amqp_published_per_order']}"
        f" + {p['amqp_delivered_per_order']}"
    ))  # fmt: skip
    row("share of broker limit", lambda p: f"{p['broker_fraction']:.1%}")
    row("DB commits/order write, all", lambda p: (
        f"{p['db_write_commits_per_order']}, {p['db_xact_commits_per_order']}"
    ))  # fmt: skip
    row("DB rows written/order", lambda p: p["db_rows_written_per_order"])
    row("WAL kB, syncs per order", lambda p: (
        f"{p['wal_bytes_per_order'] / 1000:.1f}, {p['wal_syncs_per_order']}"
    ))  # fmt: skip
    row("CPU ms/order platform", lambda p: p["cpu_ms_per_order_platform"])
    row("CPU ms/order client", lambda p: p["cpu_ms_per_order_client"])
    row("CPU ms/order machine", lambda p: p["cpu_ms_per_order_machine"])
    row("cores busy", lambda p: p["cpu_cores_busy"])
    row("invariants", lambda p: "[green]hold[/]" if p["invariants_ok"] else "[red]VIOLATED[/]")
    labels = sorted(
        {k for p in phases for k in p["cpu_ms_per_order"]},
        key=lambda k: -float(report["cpu_ms_per_order"].get(k, 0.0)),
    )
    for label in labels:
        cpu.add_row(label, *(str(p["cpu_ms_per_order"].get(label, "-")) for p in phases))
    console.print(summary)
    console.print(cpu)
    for p in phases:
        for v in p["violations"]:
            console.print(f"[red]{v}[/]")
        if p["outbox_unsent"]:
            console.print(f"[red]left unsent in outboxes: {p['outbox_unsent']}[/]")
    console.print(
        f"idle platform: {report['idle_platform_cpu_ms_per_s']} ms CPU/s, "
        f"{report['idle_xact_per_s']} transactions/s; benchmark profile in effect: "
        f"{report['profile_in_effect']}; the benchmark's own queue adds "
        f"{report['benchmark_queue_deliveries_per_order']} delivery per order (not counted)"
    )
