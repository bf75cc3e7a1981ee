"""asyncpg statements: no span, the platform's `TracedConnection`, opentelemetry-instrumentation-
asyncpg; each inside a recording span (a handler's) and outside any trace (the relay's polling).

The instrumentation wraps `asyncpg.Connection`'s methods on the class, so it is switched on for
its own runs only (instrumented, then uninstrumented): a `TracedConnection` calls the same
methods and would otherwise be counted twice.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from opentelemetry.sdk.trace import TracerProvider

from eventshop.bench.instrumentation import Group, Run, Variant
from eventshop.platform.observability.sql_spans import TracedConnection
from eventshop.platform.observability.tracing import tracer

#: a statement of the size the services run (one parameter, one row back)
STATEMENT = "SELECT $1::bigint + 1 AS next"


def official(module: str, name: str) -> tuple[Any, str | None]:
    """An official instrumentor (its instance), or None and why it cannot be had here."""
    try:
        return getattr(importlib.import_module(module), name)(), None
    except Exception as exc:  # not installed, or not importable against these pins
        return None, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def instrumented(instrumentor: Any, provider: TracerProvider) -> Any:
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _statements(conn: asyncpg.Connection, n: int, traced: bool) -> Run:
    async def run() -> None:
        with tracer().start_as_current_span("bench parent") if traced else contextlib.nullcontext():
            for i in range(n):
                await conn.fetchval(STATEMENT, i)

    return run


async def sql_group(dsn: str, provider: TracerProvider, operations: int) -> tuple[Group, Any]:
    """The group, and an async closer of its connections."""
    plain = await asyncpg.connect(dsn)
    ours = await asyncpg.connect(dsn, connection_class=TracedConnection)
    instrumentor, why = official("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor")
    group = Group("sql", operations)

    def variant(name: str, conn: asyncpg.Connection, traced: bool, official_on: bool) -> Variant:
        @contextlib.asynccontextmanager
        async def prepare(n: int) -> AsyncIterator[Run]:
            with instrumented(instrumentor, provider) if official_on else contextlib.nullcontext():
                yield _statements(conn, n, traced)

        where = "in a trace" if traced else "outside any trace"
        baseline = None if name.startswith("none") else ("none" if traced else "none.untraced")
        return Variant(name, prepare, baseline, about=f"{name.split('.')[0]}, {where}")

    for traced, suffix in ((True, ""), (False, ".untraced")):
        group.variants.append(variant(f"none{suffix}", plain, traced, False))
        group.variants.append(variant(f"ours{suffix}", ours, traced, False))
        if instrumentor is not None:
            group.variants.append(variant(f"official{suffix}", plain, traced, True))
    if why is not None:
        group.missing["opentelemetry-instrumentation-asyncpg"] = why

    async def close() -> None:
        await plain.close()
        await ours.close()

    return group, close
