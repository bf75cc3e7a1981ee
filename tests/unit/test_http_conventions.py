"""The HTTP conventions every service's API follows (eventshop.platform.http), on an in-memory
app: no I/O, nothing real but FastAPI itself."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from eventshop.platform.http import ApiError, StrictBody, correlation_id_of, install_conventions


class Thing(StrictBody):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()
    install_conventions(app)

    @app.get("/mine")
    async def mine(request: Request) -> dict[str, str]:
        return {"correlation_id": correlation_id_of(request)}

    @app.get("/refused")
    async def refused() -> None:
        raise ApiError(409, "conflict", "already there")

    @app.post("/things")
    async def things(thing: Thing) -> Thing:
        return thing

    @app.get("/claims-its-own")
    async def claims_its_own() -> JSONResponse:
        return JSONResponse({}, headers={"X-Correlation-ID": "the-routes-own"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/refused", 409, "conflict"),  # raised in a route
        ("GET", "/no/such/path", 404, "not_found"),
        ("PUT", "/mine", 405, "method_not_allowed"),
        ("POST", "/things", 422, "validation_error"),
    ],
)
async def test_every_error_is_in_the_one_shape_with_the_callers_correlation_id(
    method: str, path: str, status: int, code: str
) -> None:
    async with client(build_app()) as c:
        r = await c.request(method, path, json={"nme": "x"}, headers={"X-Correlation-ID": "c-1"})
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error", "correlation_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["correlation_id"] == "c-1"
    assert r.headers.get_list("X-Correlation-ID") == ["c-1"]


async def test_the_route_sees_the_correlation_id_answered() -> None:
    async with client(build_app()) as c:
        given = await c.get("/mine", headers={"X-Correlation-ID": "c-2"})
        made = await c.get("/mine")
    assert given.json()["correlation_id"] == given.headers["X-Correlation-ID"] == "c-2"
    assert made.json()["correlation_id"] == made.headers["X-Correlation-ID"]
    assert uuid.UUID(made.headers["X-Correlation-ID"])


async def test_the_requests_correlation_id_replaces_one_a_route_sets() -> None:
    async with client(build_app()) as c:
        r = await c.get("/claims-its-own", headers={"X-Correlation-ID": "c-3"})
    assert r.headers.get_list("X-Correlation-ID") == ["c-3"]


async def test_an_unexpected_error_is_still_a_500() -> None:
    async with client(build_app()) as c:
        r = await c.get("/boom")
    assert r.status_code == 500


def test_a_database_out_of_connections_is_the_infrastructure_not_the_request() -> None:
    """Seen with four replicas each of three services: PostgreSQL's connection slots ran out and
    orders answered 500. It is the server's state: 503 with Retry-After, and a consumer holds
    its window instead of sending events up the retry ladder."""
    from asyncpg.exceptions import TooManyConnectionsError

    from eventshop.platform.bus.failures import is_infrastructure

    assert is_infrastructure(TooManyConnectionsError("remaining connection slots are reserved"))
