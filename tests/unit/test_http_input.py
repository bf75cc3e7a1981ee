"""Bad input is a 4xx in the one JSON error shape, before any route sees it: oversized bodies,
NUL characters in URLs and bodies, text PostgreSQL cannot store; and what escapes a route is a
JSON 500 (or a 503 when the database is away), never a plain-text answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import structlog
from fastapi import FastAPI

from eventshop.platform.http import MAX_BODY_BYTES, StrictBody, install_conventions


class Note(StrictBody):
    text: str
    tags: tuple[str, ...] = ()


def build_app() -> FastAPI:
    app = FastAPI()
    install_conventions(app)

    @app.post("/notes")
    async def add(note: Note) -> dict[str, str]:
        return {"text": note.text}

    @app.get("/notes")
    async def notes() -> list[str]:
        return []

    @app.get("/notes/{name}")
    async def one(name: str, q: str = "") -> dict[str, str]:
        return {"name": name, "q": q}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/database-away")
    async def database_away() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    @app.get("/refused")
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    @app.get("/slow")
    async def slow() -> None:
        raise TimeoutError("the route's own deadline")  # an OSError, but the route's failure

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_error_shape(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["correlation_id"]


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/notes", json={"text": "x" * (MAX_BODY_BYTES + 1)})
    assert_error_shape(r, 413, "too_large")


async def test_a_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * (MAX_BODY_BYTES // 10)

    r = await client.post("/notes", content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(r, 413, "too_large")


async def test_a_body_within_the_limit_is_taken(client: httpx.AsyncClient) -> None:
    r = await client.post("/notes", json={"text": "x" * 1000})
    assert r.status_code == 200


@pytest.mark.parametrize("url", ["/notes/%00", "/notes/a?q=%00", "/notes/a%00b"])
async def test_a_nul_in_the_url_is_400(client: httpx.AsyncClient, url: str) -> None:
    assert_error_shape(await client.get(url), 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [{"text": "a\u0000b"}, {"text": "fine", "tags": ["ok", "\u0000"]}],
    ids=["in a field", "in a list"],
)
async def test_a_nul_in_the_body_is_422(client: httpx.AsyncClient, body: object) -> None:
    r = await client.post("/notes", json=body)
    assert_error_shape(r, 422, "validation_error")
    assert "NUL" in r.text


async def test_an_unpaired_surrogate_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/notes", content=b'{"text": "\\ud800"}', headers={"content-type": "application/json"}
    )
    assert_error_shape(r, 422, "validation_error")


async def test_a_body_that_is_not_utf8_is_a_4xx_in_the_shape(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/notes", content=b'{"text": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"]


async def test_a_bug_is_a_json_500_not_plain_text(client: httpx.AsyncClient) -> None:
    r = await client.get("/boom")
    assert_error_shape(r, 500, "internal_error")
    assert "a bug" not in r.text  # no internals to the client
    assert r.headers["x-correlation-id"] == r.json()["correlation_id"]


async def test_the_database_away_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    r = await client.get("/database-away")
    assert_error_shape(r, 503, "unavailable")
    assert r.headers["retry-after"] == "1"


@pytest.mark.parametrize("path", ["/database-away", "/refused"])
async def test_a_backing_service_away_is_answered_by_the_app_with_a_warning_not_a_traceback(
    path: str,
) -> None:
    # with raise_app_exceptions, what reaches Starlette's outermost middleware (which logs a
    # traceback at error level for it) is raised here: the 503 must come from inside the app
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        with structlog.testing.capture_logs() as logs:
            r = await c.get(path)
    assert_error_shape(r, 503, "unavailable")
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-correlation-id"] == r.json()["correlation_id"]
    [line] = [e for e in logs if e["event"] == "http.backing_service_unavailable"]
    assert line["log_level"] == "warning" and line["path"] == path


async def test_a_timeout_in_a_route_is_still_a_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/slow")
    assert_error_shape(r, 500, "internal_error")


async def test_a_method_the_path_does_not_take_is_405_with_every_method_it_does(
    client: httpx.AsyncClient,
) -> None:
    r = await client.delete("/notes")
    assert_error_shape(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, POST"  # two routes of the path, both named
