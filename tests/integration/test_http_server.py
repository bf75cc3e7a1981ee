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
