"""A request too malformed to reach any app (a broken header line) is refused by the server the
runtime configures in the one JSON error shape, never in plain text."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import uvicorn
from fastapi import FastAPI

from eventshop.platform.http import install_conventions
from eventshop.platform.runtime import http_server_config
from eventshop.platform.settings import PlatformSettings
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def test_a_malformed_request_gets_the_json_error_shape() -> None:
    app = FastAPI()
    install_conventions(app)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(http_server_config(app, port, PlatformSettings()))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="the server serving")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\ntransfer-encoding;\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        server.should_exit = True
        await task
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["error"]["code"] == "bad_request" and error["correlation_id"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def replica(name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who() -> dict[str, str]:
        return {"replica": name}

    return app


async def test_replicas_share_the_port_and_each_answers_some_connections() -> None:
    """Replicas of a service (ADR 0012) each bind the service's one port with SO_REUSEPORT: both
    start, and the kernel hands each new connection to one of them."""
    import httpx

    from eventshop.platform.runtime import listening_socket

    port = free_port()
    settings = PlatformSettings()
    servers, tasks = [], []
    for name in ("one", "two"):
        sock = listening_socket("127.0.0.1", port, reuse_port=True)
        server = uvicorn.Server(http_server_config(replica(name), port, settings))
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
    try:
        await eventually(lambda: all(s.started for s in servers), what="both serving")
        seen: set[str] = set()
        for _ in range(64):  # a new connection each: the kernel picks a replica per connection
            async with httpx.AsyncClient() as client:
                seen.add((await client.get(f"http://127.0.0.1:{port}/who")).json()["replica"])
            if len(seen) == 2:
                break
        assert seen == {"one", "two"}
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


def test_without_reuse_port_a_second_process_cannot_take_the_port() -> None:
    """One process per service keeps the old guard: a second one (a stale platform of another
    checkout, say) fails to bind instead of silently sharing the port."""
    from eventshop.platform.runtime import listening_socket

    port = free_port()
    first = listening_socket("127.0.0.1", port, reuse_port=False)
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port, reuse_port=False).close()
    finally:
        first.close()
