"""Database work as spans: every statement run while a span is recording is a CLIENT span of it.

`TracedConnection` is the pools' connection class (platform/runtime.py). Outside a trace (the
relay's polling, untraced events) a statement costs one look-up of the current span more,
nothing else. The span holds the statement's text, never its parameters.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from eventshop.platform.db import Connection
from eventshop.platform.observability.tracing import tracer

_OPERATION = re.compile(r"^\s*(\w+)")
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+([\w.\"]+)", re.IGNORECASE)
_names: dict[str, str] = {}


def statement_name(query: str) -> str:
    """The operation and the first table a statement names ("SELECT orders", "INSERT outbox")."""
    name = _names.get(query)
    if name is None:
        op = _OPERATION.match(query)
        table = _TABLE.search(query)
        name = " ".join(
            p for p in ((op[1].upper() if op else "SQL"), (table[1] if table else "")) if p
        )
        if len(_names) > 5_000:
            _names.clear()
        _names[query] = name
    return name


async def _traced(run: Callable[..., Awaitable[Any]], query: str, *args: Any, **kw: Any) -> Any:
    if not trace.get_current_span().is_recording():
        return await run(query, *args, **kw)
    with tracer().start_as_current_span(
        statement_name(query),
        kind=SpanKind.CLIENT,
        attributes={"db.system": "postgresql", "db.statement": query[:1_000]},
    ):
        return await run(query, *args, **kw)


class TracedConnection(Connection):  # type: ignore[misc]
    """A platform connection (platform/db.py) whose statements are spans when run under a
    recording span."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        # asyncpg's execute itself, not Connection's wrapper of it: one wrapper a statement
        return self.keep_commit(
            query, await _traced(super(Connection, self).execute, query, *args, **kwargs)
        )

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        return await _traced(super().executemany, command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await _traced(super().fetch, query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await _traced(super().fetchrow, query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await _traced(super().fetchval, query, *args, **kwargs)
