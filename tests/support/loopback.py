"""ASGI apps served over real HTTP on loopback, inside the test's own event loop.

The gateway's HTTP client (aiohttp) has no in-memory transport: a service it calls in a test
listens on a loopback port, as it does in production, served by uvicorn as the runtime does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp

STARTUP_TIMEOUT_S = 5.0


class _InTestServer(uvicorn.Server):
    """A uvicorn server that leaves the test process's signal handlers alone and stops as soon
    as it is told (uvicorn's own loop looks for that ten times a second)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the default headers (Date), as uvicorn's loop sets them first
        await self._stop.wait()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()


async def _started(server: _InTestServer, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def serving(*apps: ASGIApp) -> AsyncIterator[list[str]]:
    """Serve each app on a free loopback port until the block ends; their base URLs, in order.
    Close the clients first: the servers wait for open connections to finish."""
    servers: list[_InTestServer] = []
    tasks: list[asyncio.Task[None]] = []
    urls: list[str] = []
    try:
        for app in apps:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
            config = uvicorn.Config(
                app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1
            )
            servers.append(server := _InTestServer(config))
            tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        await asyncio.gather(*map(_started, servers, tasks))
        yield urls
    finally:
        for server in servers:
            server.stop()
        await asyncio.gather(*tasks)  # together: each shutdown takes uvicorn's 0.1 s
