"""aiohttp client calls (what the gateway sends each service) and Redis commands (what it sends
for sessions and rate limits).

HTTP: a small server in a process of its own (its CPU is not this process's), called with no
span, with the gateway's CLIENT span (the span part of `Upstreams.call`: the same name,
attributes, `inject_http` and status; copied here because the call also counts metrics and
signs identities, which are not tracing), or through opentelemetry-instrumentation-aiohttp-
client's trace config on the session (the instrumentation's own, without patching aiohttp).
Each call runs inside a recording span, as the gateway's run inside its SERVER span.

Redis: the platform makes no Redis span; a GET without and with opentelemetry-
instrumentation-redis, inside a recording span.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from eventshop.bench.instrumentation import Group, Run, Variant
from eventshop.bench.instrumentation.sql import instrumented, official
from eventshop.platform.observability import tracing

SERVER = """
import sys
from aiohttp import web

async def orders(request):
    await request.read()
    return web.json_response({"order_id": "o-1", "status": "pending"}, status=201)

async def main():
    app = web.Application()
    app.router.add_post("/orders", orders)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""
BODY = {"items": [{"sku": "SKU-1", "quantity": 1}], "currency": "EUR"}


class HttpServer:
    """The server process, on a free loopback port."""

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        return f"http://127.0.0.1:{port}/orders"

    def __exit__(self, *_: Any) -> None:
        self.process.terminate()
        self.process.wait(10)


async def _call(session: aiohttp.ClientSession, url: str, ours: bool) -> None:
    headers = {"X-Correlation-Id": "c-1", "Idempotency-Key": "k-1"}
    if not ours:
        async with session.post(url, json=BODY, headers=headers) as response:
            await response.read()
        return
    with tracing.tracer().start_as_current_span(
        "POST orders",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "server.address": "orders",
            "url.path": "/orders",
        },
    ) as span:
        tracing.inject_http(headers)
        async with session.post(url, json=BODY, headers=headers) as response:
            await response.read()
        span.set_attribute("http.response.status_code", response.status)


def http_group(url: str, provider: TracerProvider, operations: int) -> Group:
    group = Group("http", operations)
    try:
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config
    except Exception as exc:
        create_trace_config = None
        group.missing["opentelemetry-instrumentation-aiohttp-client"] = (
            f"{type(exc).__name__}: {exc}"
        )

    def variant(name: str) -> Variant:
        @contextlib.asynccontextmanager
        async def prepare(n: int) -> AsyncIterator[Run]:
            configs = []
            if name == "official" and create_trace_config is not None:
                configs.append(create_trace_config(tracer_provider=provider))
            async with aiohttp.ClientSession(trace_configs=configs) as session:
                await _call(session, url, False)  # the connection open before the timing

                async def run() -> None:
                    with tracing.tracer().start_as_current_span("bench parent"):
                        for _ in range(n):
                            await _call(session, url, name == "ours")

                yield run

        return Variant(name, prepare, None if name == "none" else "none", about=name)

    names = ["none", "ours"] + (["official"] if create_trace_config is not None else [])
    group.variants += [variant(n) for n in names]
    return group


async def redis_group(url: str, provider: TracerProvider, operations: int) -> tuple[Group, Any]:
    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(url)
    await client.set("bench:instrumentation", "1")
    instrumentor, why = official("opentelemetry.instrumentation.redis", "RedisInstrumentor")
    group = Group("redis", operations)

    def variant(name: str) -> Variant:
        @contextlib.asynccontextmanager
        async def prepare(n: int) -> AsyncIterator[Run]:
            # instrumented before the client is made: the instrumentation wraps the classes
            with (
                instrumented(instrumentor, provider)
                if name == "official"
                else (contextlib.nullcontext())
            ):
                c: Any = redis.asyncio.Redis.from_url(url)
                await c.get("bench:instrumentation")

                async def run() -> None:
                    with tracing.tracer().start_as_current_span("bench parent"):
                        for _ in range(n):
                            await c.get("bench:instrumentation")

                yield run
                await c.aclose()

        return Variant(name, prepare, None if name == "none" else "none", about=name)

    group.variants.append(variant("none"))
    if instrumentor is not None:
        group.variants.append(variant("official"))
    else:
        group.missing["opentelemetry-instrumentation-redis"] = why or "?"

    async def close() -> None:
        await client.delete("bench:instrumentation")
        await client.aclose()
        await asyncio.sleep(0)

    return group, close
