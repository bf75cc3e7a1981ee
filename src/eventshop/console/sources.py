"""Where the console's data comes from: the functions the CLI uses, with the operator's
credentials (the database and broker URLs of EVENTSHOP_DATABASE_URL and EVENTSHOP_AMQP_URL,
as for `eventshop status` and `eventshop dlq`), and the gateway's API as the logged-in admin
(an order's history and its state as of a version). Connections are opened on first use and
kept."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
from aio_pika.abc import AbstractRobustConnection

from eventshop.console.saga import SagaSummary, saga_summary
from eventshop.console.views import Action, ParkedFilter
from eventshop.ops import parked as ops_parked
from eventshop.ops.status import platform_status
from eventshop.ops.traces import load_spans
from eventshop.platform.bus.node import connect_robust
from eventshop.platform.bus.parking import ParkedMessage
from eventshop.platform.http import ApiError
from eventshop.platform.observability.tracing import TracingSettings
from eventshop.platform.settings import PlatformSettings

#: how many status readings each service's small plot keeps
STATUS_POINTS = 60


class Sources:
    def __init__(
        self,
        gateway: httpx.AsyncClient,
        platform: PlatformSettings | None = None,
        trace_dir: Path | None = None,
    ) -> None:
        self.gateway = gateway
        self.platform = platform or PlatformSettings()
        self.trace_dir = trace_dir or TracingSettings().directory()
        self._pool: asyncpg.Pool | None = None
        self._amqp: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()
        self._status: dict[str, deque[dict[str, Any]]] = {}
        self._status_at = 0.0

    async def db(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.platform.database_url, min_size=1, max_size=4
                )
            return self._pool

    async def amqp(self) -> AbstractRobustConnection:
        async with self._lock:
            if self._amqp is None or self._amqp.is_closed:
                self._amqp = await connect_robust(self.platform.amqp_url, name="eventshop-console")
            return self._amqp

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._amqp is not None:
            await self._amqp.close()

    # -- the saga and the services ----------------------------------------------------------
    async def saga(self) -> SagaSummary:
        return await saga_summary(await self.db())

    async def status(self) -> list[dict[str, Any]]:
        return (await platform_status(await self.db(), await self.amqp())).rows()

    def remember_status(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Keep one reading per second per service for the small plots; what is kept so far."""
        now = time.monotonic()
        if now - self._status_at >= 1.0:
            self._status_at = now
            for row in rows:
                kept = self._status.setdefault(row["service"], deque(maxlen=STATUS_POINTS))
                kept.append({**row, "at": now})
        return {name: list(points) for name, points in self._status.items()}

    # -- the parking lot ---------------------------------------------------------------------
    def _services(self, where: ParkedFilter) -> list[str]:
        if where.service is None:
            return list(ops_parked.CONSUMING)
        if where.service not in ops_parked.CONSUMING:
            raise ApiError(422, "validation_error", f"no parking lot for {where.service!r}")
        return [where.service]

    def _where(self, where: ParkedFilter) -> ops_parked.ParkedFilterFn:
        return ops_parked.parked_filter(
            where.event_type, where.error, where.correlation_id, None, where.event_id
        )

    async def parked(self, where: ParkedFilter) -> list[tuple[str, ParkedMessage]]:
        return await ops_parked.parked_of(
            await self.amqp(), self._services(where), self._where(where)
        )

    async def act_on_parked(
        self, action: Action, where: ParkedFilter
    ) -> list[tuple[str, ParkedMessage]]:
        return await ops_parked.act_on_parked(
            await self.amqp(), action, self._services(where), self._where(where)
        )

    # -- one order ----------------------------------------------------------------------------
    async def _api(self, token: str, path: str, **params: Any) -> Any:
        answer = await self.gateway.get(
            path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        if answer.status_code == 404:
            raise ApiError(404, "not_found", "no such order")
        answer.raise_for_status()
        return answer.json()

    async def order_history(self, token: str, order_id: str) -> list[dict[str, Any]]:
        path = f"/orders/{quote(order_id, safe='')}/history"
        found: list[dict[str, Any]] = await self._api(token, path)
        return found

    async def order_as_of(self, token: str, order_id: str, version: int) -> dict[str, Any]:
        found: dict[str, Any] = await self._api(
            token, f"/orders/{quote(order_id, safe='')}/as-of", version=version
        )
        return found

    def trace(self, key: str) -> list[dict[str, Any]]:
        return load_spans(self.trace_dir, key)
