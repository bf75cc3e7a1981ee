"""The whole order benchmark: the platform readied, the shop made, the idle baseline, one or
two phases, the platform put back; on uvloop."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from typing import Any

import aiohttp
import asyncpg
import httpx
from rich.console import Console

from eventshop.bench.orders.config import BenchError, OrdersBenchConfig
from eventshop.bench.orders.measure import measure_idle, read_bindings
from eventshop.bench.orders.phase import run_phase
from eventshop.bench.orders.platform import PlatformState, ensure_platform, release_platform
from eventshop.bench.orders.report import phase_report, run_report
from eventshop.bench.orders.shop import setup_shop
from eventshop.bench.orders.watcher import FinalWatcher
from eventshop.tooling import supervise


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

            async def phase(name: str, rate: float | None) -> dict[str, Any]:
                result = await run_phase(
                    name=name,
                    cfg=cfg,
                    shop=shop,
                    run=run,
                    rate=rate,
                    placer=placer,
                    watcher=watcher,
                    conn=conn,
                    console=console,
                    rng=rng,
                )
                return phase_report(result, idle, bindings, watcher.queue_name)

            reports = [await phase("run", cfg.rate)]
            if cfg.half_rate and reports[0]["orders_per_s_final"] > 0:
                reports.append(await phase("half-rate", reports[0]["orders_per_s_final"] / 2))
        finally:
            await watcher.close()
            await conn.close()
    return run_report(
        cfg,
        reports,
        run=run,
        setup=setup,
        platform=platform,
        idle=idle,
        bindings=bindings,
        watcher=watcher,
    )


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
