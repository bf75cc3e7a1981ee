"""The bus benchmark's phases, each timed and its CPU measured, and the whole run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from eventshop.bench.bus.config import (
    ACK_EVERY,
    MESSAGE_SIZE,
    PREFETCH,
    RAW_MODES,
    WINDOW,
    BenchConfig,
    timeout_for,
)
from eventshop.bench.bus.measure import CpuSnapshot, Phase, database_pids
from eventshop.bench.bus.protocol import Child
from eventshop.bench.bus.report import of_rounds, summarise
from eventshop.bench.bus.resources import cleanup, declare_raw_queue, prepare_schemas

Say = Callable[[str], None]


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
        r = await child.read(timeout_for(n))
        after = CpuSnapshot.take({role: child.pid})
        cpu = after.since(before, ours=[child.pid])
        return Phase(name, n, r["end"] - r["start"], cpu, extra(r))
    finally:
        await child.finish()


async def raw_phases(cfg: BenchConfig, say: Say) -> list[Phase]:
    n = cfg.raw_messages
    base = cfg.child(
        queue=cfg.raw_queue,
        count=n,
        size=MESSAGE_SIZE,
        window=WINDOW,
        ack_every=ACK_EVERY,
        publish_mode="gather",
    )
    phases: list[Phase] = []

    say(f"raw aio-pika: publishing {n:,} messages (confirm window {WINDOW:,})")
    phases.append(await _alone("raw-publish", "publisher", base, n, "raw publish", _failed))

    say(f"raw aio-pika: consuming the backlog of {n:,} (prefetch {PREFETCH:,})")
    phases.append(await _alone("raw-consume", "consumer", base, n, "raw consume"))

    # end to end with both ways of keeping 1,000 publishes in flight; the faster one counts
    for mode in ("gather", "sliding"):
        say(
            f"raw aio-pika: {n:,} messages end to end, publisher and consumer processes"
            f" ({RAW_MODES[mode]})"
        )
        con = await Child.start("raw-consume", base)
        pub = await Child.start("raw-publish", {**base, "publish_mode": mode})
        try:
            await con.ready()
            await pub.ready()
            roles = {"publisher": pub.pid, "consumer": con.pid}
            before = CpuSnapshot.take(roles)
            await con.tell("go")
            await pub.tell("go")
            rc = await con.read(timeout_for(n))
            after = CpuSnapshot.take(roles)
            rp = await pub.read(10)
            cpu = after.since(before, ours=list(roles.values()))
            seconds = rc["end"] - rp["start"]
            phases.append(Phase(f"raw end to end, {mode}", n, seconds, cpu, _failed(rp)))
        finally:
            await asyncio.gather(pub.finish(), con.finish())
    return phases


async def outbox_phase(cfg: BenchConfig, say: Say) -> Phase:
    n = cfg.events
    await prepare_schemas(cfg)
    # a body about as big as the raw messages: the envelope's JSON is ~250 bytes without a note
    note = "x" * 40
    producer = {"schema": cfg.producer, "service": cfg.producer, "count": n}
    consuming = {"schema": cfg.consumer, "service": cfg.consumer, "count": n}
    relay = await Child.start("relay", cfg.child(**producer, timeout_s=timeout_for(n)))
    consumer = await Child.start(
        "consumer",
        cfg.child(**consuming, timeout_s=timeout_for(n), batch_handler=cfg.batch_handler),
    )
    writer = await Child.start("writer", cfg.child(**producer, batch=cfg.write_batch, note=note))
    children = [relay, consumer, writer]
    try:
        await asyncio.gather(*(c.ready() for c in children))
        say(
            f"outbox -> relay -> broker -> consumer + inbox: {n:,} events "
            f"({cfg.write_batch} a transaction, prefetch {cfg.prefetch:,}, sent rows"
            f" {'kept' if cfg.keeps_sent else 'deleted as confirmed'})"
        )
        roles = {"relay": relay.pid, "consumer": consumer.pid, "writer": writer.pid}
        database = await database_pids(cfg.settings.database_url, list(roles.values()))
        before = CpuSnapshot.take(roles)
        await consumer.tell("go")
        await relay.tell("go")
        await writer.tell("go")
        rc = await consumer.read(timeout_for(n) + 5)
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
        unsent = await conn.fetchval(f'SELECT count(*) FROM "{p}".outbox')
        left = unsent + await conn.fetchval(f'SELECT count(*) FROM "{p}".outbox_sent')
        rows = await conn.fetchval(f'SELECT count(*) FROM "{c}".effects')
        inbox = await conn.fetchval(f'SELECT count(*) FROM "{c}".inbox')
        if cfg.keeps_sent:  # every committed row is still there: each effect is matched to one
            committed = left
            distinct = await conn.fetchval(
                f'SELECT count(DISTINCT e.event_id) FROM "{c}".effects e'
                f' JOIN (SELECT event_id FROM "{p}".outbox UNION ALL'
                f' SELECT event_id FROM "{p}".outbox_sent) o USING (event_id)'
            )
            body = await conn.fetchval(f'SELECT avg(length(body))::int FROM "{p}".outbox_sent')
        else:  # the sent rows are gone: the writer's seqs 0..n-1, each in one committed row
            committed = n
            distinct = await conn.fetchval(
                f'SELECT count(DISTINCT seq) FROM "{c}".effects WHERE seq >= 0 AND seq < $1', n
            )
            body = None
    finally:
        await conn.close()
    extra = {
        "committed": committed,
        "unsent": unsent,
        "effect_rows": rows,
        "distinct_effects": distinct,
        "inbox_rows": inbox,
        "lost": committed - distinct,
        "duplicate_effects": rows - distinct,
        "body_bytes": body,
        "sent_rows": "kept" if cfg.keeps_sent else "deleted",
        "outbox_rows_left": left,
        # when each stage had done all N, from the writer's start: the last to finish paced it
        "writer_done_s": round(rw["end"] - rw["start"], 3),
        "relay_done_s": round(rr["end"] - rw["start"], 3),
        "consumer_done_s": round(rc["end"] - rw["start"], 3),
        "published": rr["published"],
        "consumer_batches": rc["batches"],
        "duplicates_absorbed": rc["duplicates"],
        "retried": rc["retried"],
        "parked": rc["parked"],
    }
    cpu = after.since(before, ours=list(roles.values()), database=database)
    return Phase("outbox e2e", n, rc["end"] - rw["start"], cpu, extra)


async def run_bench(cfg: BenchConfig, say: Say = print) -> dict[str, Any]:
    """One round, or `cfg.rounds` alternating which side goes first (raw then outbox, outbox
    then raw, ...), each on schemas and queues of its own: the rounds' medians."""

    async def raw() -> list[Phase]:
        if not cfg.raw:
            return []
        await declare_raw_queue(cfg)
        return await raw_phases(cfg, say)

    reports = []
    for i in range(cfg.rounds):
        if cfg.rounds > 1:
            say(f"round {i + 1} of {cfg.rounds}")
        try:
            before = await raw() if i % 2 == 0 else []
            outbox = await outbox_phase(cfg, say)
            after = await raw() if i % 2 == 1 else []
        finally:
            await cleanup(cfg)
        reports.append(summarise(cfg, [*before, *after, outbox]))
    return reports[0] if len(reports) == 1 else of_rounds(reports)
