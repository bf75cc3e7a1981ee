"""The gateway's public API against a real users service, real PostgreSQL and real Redis.

What is real: the users app (its routes, a random PostgreSQL schema, argon2 with cheap
parameters), served by uvicorn on a loopback port and reached by the gateway's own HTTP client;
Redis (db 15, every key under a random prefix, deleted after each test) for sessions and rate
limits; real sockets for the services that are down (a closed port) or hang (a server that never
answers). The test client drives the gateway's app in process (httpx's ASGI transport).

What stands in for other services: `RecordingService`, a tiny app that answers what it was sent
(on loopback too), in place of orders, archive, notifications and loyalty, so a test can see
exactly what the gateway forwards (path, query, identity headers, correlation id,
Idempotency-Key). Those services are not this module's subject; the gateway knows them only
over HTTP anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from eventshop.platform.bus.node import BusNode
from eventshop.platform.db import migrate
from eventshop.platform.service import ServiceContext, build_app
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS
from eventshop.services.gateway.adapters import ratelimit
from eventshop.services.gateway.adapters.auth import Tokens
from eventshop.services.gateway.adapters.ratelimit import RateLimiter
from eventshop.services.gateway.adapters.upstream import Upstreams
from eventshop.services.gateway.service import Resources, assemble, connect_redis
from eventshop.services.gateway.service import definition as gateway_definition
from eventshop.services.gateway.settings import GatewaySettings
from eventshop.services.users import service as users_service
from eventshop.services.users.settings import UsersSettings
from tests.conftest import SchemaFactory
from tests.support.loopback import serving
from tests.support.services import service_context

pytestmark = pytest.mark.integration


def gateway_app(settings: GatewaySettings, redis: Redis, upstreams: Upstreams) -> FastAPI:
    """The gateway's app as the runtime builds it, on the test's own clients (no pool, no bus:
    the gateway's routes use neither)."""
    ctx = ServiceContext(
        name="gateway",
        platform=PlatformSettings(),
        settings=settings,
        resources=Resources(redis=redis, gateway=assemble(settings, redis, upstreams)),
        pool=None,
        bus=cast(BusNode, None),  # the gateway's routes use no bus
    )
    return build_app(gateway_definition, ctx)


REDIS_URL = "redis://127.0.0.1:6379/15"
SECRET = "integration-test-secret-of-32-characters-or-more"
ADMIN_EMAIL = "root@shop.example"
PASSWORD = "correct horse"
CLIENT_IP = "203.0.113.7"


@dataclass
class RecordingService:
    """Stands in for a downstream service: records each request, answers it back as JSON."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
        async def record(path: str, request: Request) -> JSONResponse:
            body = await request.body()
            seen = {
                "method": request.method,
                "path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": await request.json() if body else None,
            }
            self.seen.append(seen)
            asked = request.query_params
            pad = int(asked.get("pad", "0"))
            answer = JSONResponse(
                {"echo": seen, "padding": "x" * pad},
                status_code=int(asked.get("status", 202 if request.method == "POST" else 200)),
            )
            if "location" in asked:
                answer.headers["Location"] = asked["location"]
            if "cookie" in asked:
                answer.set_cookie("session", asked["cookie"])
            return answer

        return app


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Shop:
    """The gateway as a client sees it, and what is behind it."""

    api: httpx.AsyncClient
    redis: Redis
    prefix: str
    recorder: RecordingService

    async def register(self, email: str | None = None) -> dict[str, Any]:
        email = email or f"shopper-{uuid.uuid4().hex[:8]}@example.com"
        r = await self.api.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert r.status_code == 201, r.text
        account: dict[str, Any] = r.json()
        return account

    async def login(self, email: str) -> str:
        r = await self.api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def shopper(self, email: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """A registered, logged-in user: its account and its Authorization header."""
        account = await self.register(email)
        token = await self.login(account["email"])
        return account, {"Authorization": f"Bearer {token}"}


MakeShop = Callable[..., Awaitable[Shop]]


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never answers: a service that hangs."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client gives up and closes
        finally:
            writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


@pytest.fixture
async def make_shop(
    make_schema: SchemaFactory, settings: PlatformSettings, silent_port: int
) -> AsyncIterator[MakeShop]:
    """Build gateways (settings overridable per test) in front of one users service."""
    schema, pool = await make_schema("users")
    await migrate(pool, ["eventshop.services.users.migrations"])
    servers = contextlib.AsyncExitStack()
    users_settings = UsersSettings(
        admin_emails=ADMIN_EMAIL, password_time_cost=1, password_memory_kib=1_024,
        password_parallelism=1,
    )  # fmt: skip
    users_ctx = await servers.enter_async_context(
        service_context(
            users_service.definition, schema, pool, settings, service_settings=users_settings
        )
    )
    users_app = build_app(users_service.definition, users_ctx)
    redis = connect_redis(REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    recorder = RecordingService()
    clients: list[httpx.AsyncClient] = []
    gateways_upstreams: list[Upstreams] = []
    other_redises: list[Redis] = []
    users_url, recorder_url = await servers.enter_async_context(serving(users_app, recorder.app()))

    def url_of(service: str) -> str:
        if service == "users":
            return users_url
        if service in ("orders", "archive", "notifications", "loyalty"):
            return recorder_url
        if service == "payments":  # hangs
            return f"http://127.0.0.1:{silent_port}"
        # catalog, inventory: down
        return f"http://127.0.0.1:{closed_port()}"

    async def make(
        *, redis_url: str = REDIS_URL, identity_key: bytes | None = None, **overrides: Any
    ) -> Shop:
        values: dict[str, Any] = {
            "jwt_secret": SECRET,
            "rate_per_ip": 10_000,
            "rate_per_user": 10_000,
            "rate_window_s": 60,
            "redis_prefix": prefix,
            "upstream_connect_timeout_s": 0.5,
            "upstream_timeout_s": 0.5,
            **overrides,
        }
        gateway_settings = GatewaySettings(**values)
        upstreams = Upstreams.at(
            {name: url_of(name) for name in BACKENDS},
            timeout_s=gateway_settings.upstream_timeout_s,
            connect_timeout_s=gateway_settings.upstream_connect_timeout_s,
            # as the services behind it check it, unless the test gives another
            identity_key=identity_key or settings.identity_key(),
        )
        gateways_upstreams.append(upstreams)
        gateway_redis = redis
        if redis_url != REDIS_URL:
            gateway_redis = connect_redis(redis_url)
            other_redises.append(gateway_redis)
        app = gateway_app(gateway_settings, gateway_redis, upstreams)
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=(CLIENT_IP, 40_000)),
            base_url="http://gateway",
        )
        clients.append(api)
        return Shop(api=api, redis=redis, prefix=prefix, recorder=recorder)

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()
        for upstreams in gateways_upstreams:
            await upstreams.aclose()
        await servers.aclose()  # once nothing is connected to them
        for other in other_redises:
            await other.aclose()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@pytest.fixture
async def shop(make_shop: MakeShop) -> Shop:
    return await make_shop()


def assert_error_shape(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "correlation_id"}
    assert body["error"]["code"] == code
    assert body["correlation_id"] == r.headers["X-Correlation-ID"]
    return body


# -- auth -------------------------------------------------------------------------------------
async def test_register_login_and_me(shop: Shop) -> None:
    account = await shop.register()
    assert account["role"] == "customer"

    r = await shop.api.post(
        "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["token_type"] == "bearer"
    assert login["expires_in"] == 3_600
    sessions = [k async for k in shop.redis.scan_iter(match=f"{shop.prefix}session:*")]
    assert len(sessions) == 1
    assert 3_590 <= await shop.redis.ttl(sessions[0]) <= 3_600

    r = await shop.api.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {login['access_token']}"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == account


async def test_a_wrong_password_is_refused_in_the_users_words(shop: Shop) -> None:
    account = await shop.register()
    r = await shop.api.post(
        "/api/v1/auth/login", json={"email": account["email"], "password": "battery staple"}
    )
    assert_error_shape(r, 401, "invalid_credentials")
    assert [k async for k in shop.redis.scan_iter(match=f"{shop.prefix}session:*")] == []


async def test_a_taken_email_is_a_conflict(shop: Shop) -> None:
    account = await shop.register()
    r = await shop.api.post(
        "/api/v1/auth/register",
        json={"email": account["email"].upper(), "password": PASSWORD, "name": "Eve"},
    )
    assert_error_shape(r, 409, "email_taken")


async def test_no_valid_token_is_401(shop: Shop) -> None:
    expired = Tokens(SECRET, ttl_s=60, clock=lambda: time.time() - 120).issue(
        user_id=str(uuid.uuid4()), email="late@example.com", role="admin"
    )
    forged = Tokens("not-the-gateway-secret-but-long-enough-anyway", ttl_s=60).issue(
        user_id=str(uuid.uuid4()), email="eve@example.com", role="admin"
    )
    for token in (expired, forged):  # even with a live session, the token itself must hold
        principal = token.principal
        await shop.redis.set(f"{shop.prefix}session:{principal.jti}", principal.user_id, ex=60)
    for authorization in [
        None,
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        f"Bearer {expired.access_token}",
        f"Bearer {forged.access_token}",
    ]:
        headers = {"Authorization": authorization} if authorization else {}
        for path in ["/api/v1/users/me", "/api/v1/orders", "/api/v1/loyalty/points"]:
            r = await shop.api.get(path, headers=headers)
            assert_error_shape(r, 401, "unauthenticated")
            assert r.headers["WWW-Authenticate"] == "Bearer"
    assert shop.recorder.seen == []


async def test_logout_revokes_the_token(shop: Shop) -> None:
    _, auth = await shop.shopper()
    _, other_auth = await shop.shopper()
    assert (await shop.api.get("/api/v1/users/me", headers=auth)).status_code == 200

    r = await shop.api.post("/api/v1/auth/logout", headers=auth)
    assert r.status_code == 204

    r = await shop.api.get("/api/v1/users/me", headers=auth)
    body = assert_error_shape(r, 401, "unauthenticated")
    assert "session ended" in body["error"]["message"]
    assert (await shop.api.post("/api/v1/auth/logout", headers=auth)).status_code == 401
    # another session is untouched
    assert (await shop.api.get("/api/v1/users/me", headers=other_auth)).status_code == 200


# -- roles ------------------------------------------------------------------------------------
NEW_PRODUCT = {"sku": "tea-1", "name": "Tea", "price_minor": 450, "currency": "EUR"}


async def test_admin_routes_are_403_for_customers_and_never_forwarded(shop: Shop) -> None:
    _, auth = await shop.shopper()
    change = {"name": "Green tea", "price_minor": 500, "currency": "EUR", "active": True}
    for method, path, body in [
        ("POST", "/api/v1/products", NEW_PRODUCT),
        ("PUT", "/api/v1/products/tea-1", change),
        ("POST", "/api/v1/stock/tea-1/restock", {"quantity": 5}),
        ("GET", "/api/v1/events", None),
    ]:
        r = await shop.api.request(method, path, json=body, headers=auth)
        # the catalog and inventory are down: a forwarded request would be a 503
        assert_error_shape(r, 403, "forbidden")
    assert shop.recorder.seen == []


async def test_admins_pass_the_gateway_with_their_role_forwarded(shop: Shop) -> None:
    admin, auth = await shop.shopper(ADMIN_EMAIL)
    assert admin["role"] == "admin"

    r = await shop.api.get(
        "/api/v1/events?event_type=order.created&correlation_id=c1&limit=5", headers=auth
    )
    assert r.status_code == 200, r.text
    seen = r.json()["echo"]
    assert seen["path"] == "/events"
    assert seen["query"] == "event_type=order.created&correlation_id=c1&limit=5"
    assert seen["headers"]["x-user-role"] == "admin"
    assert seen["headers"]["x-user-id"] == admin["user_id"]

    r = await shop.api.post("/api/v1/products", json=NEW_PRODUCT, headers=auth)
    assert_error_shape(r, 503, "unavailable")  # past the role check, to a catalog that is down


# -- bodies -----------------------------------------------------------------------------------
INVALID_BODIES = [
    (
        "/api/v1/auth/register",
        {"email": "a@example.com", "password": PASSWORD, "name": "A", "role": "admin"},
        "role",
    ),
    ("/api/v1/orders", {"lines": [{"sku": "tea-1", "quantity": 1, "price": 0}]}, "lines.0.price"),
    ("/api/v1/orders", {"lines": [{"sku": "tea-1", "quantity": "2"}]}, "lines.0.quantity"),
    ("/api/v1/orders", {"lines": []}, "lines"),
    ("/api/v1/orders", {"lines": [{"sku": "t", "quantity": 1}], "coupon": "FREE"}, "coupon"),
]


async def test_an_invalid_body_is_422_naming_the_field(shop: Shop) -> None:
    _, auth = await shop.shopper()
    for path, body, named in INVALID_BODIES:
        r = await shop.api.post(path, json=body, headers=auth)
        error = assert_error_shape(r, 422, "validation_error")["error"]
        assert named in [d["field"] for d in error["details"]], (path, body)
        assert named in error["message"]
    assert shop.recorder.seen == []


# -- forwarding -------------------------------------------------------------------------------
async def test_an_order_is_forwarded_with_identity_correlation_and_idempotency_key(
    shop: Shop,
) -> None:
    account, auth = await shop.shopper()
    r = await shop.api.post(
        "/api/v1/orders",
        json={"lines": [{"sku": "tea-1", "quantity": 2}]},
        headers={
            **auth,
            "X-Correlation-ID": "cid-order-42",
            "Idempotency-Key": "key-42",
            # a client cannot pass itself off as someone else
            "X-User-Id": "somebody-else",
            "X-User-Role": "admin",
        },
    )
    assert r.status_code == 202  # the service's status, relayed
    assert r.headers["X-Correlation-ID"] == "cid-order-42"
    seen = r.json()["echo"]
    assert seen["method"] == "POST"
    assert seen["path"] == "/orders"
    assert seen["json"] == {"lines": [{"sku": "tea-1", "quantity": 2}]}  # no defaults added
    headers = seen["headers"]
    assert headers["x-correlation-id"] == "cid-order-42"
    assert headers["idempotency-key"] == "key-42"
    assert headers["x-user-id"] == account["user_id"]
    assert headers["x-user-role"] == "customer"
    assert headers["x-user-email"] == account["email"]
    assert "authorization" not in headers


async def test_a_correlation_id_is_made_when_none_is_sent_and_is_the_same_downstream(
    shop: Shop,
) -> None:
    _, auth = await shop.shopper()
    r = await shop.api.get("/api/v1/orders?limit=3", headers=auth)
    assert r.status_code == 200
    cid = r.headers["X-Correlation-ID"]
    assert uuid.UUID(cid)
    seen = r.json()["echo"]
    assert seen["headers"]["x-correlation-id"] == cid
    assert seen["query"] == "limit=3"


async def test_time_travel_is_forwarded_with_its_query(shop: Shop) -> None:
    account, auth = await shop.shopper()
    r = await shop.api.get("/api/v1/orders/o-1/as-of?at=2026-11-24T10:00:00%2B00:00", headers=auth)
    assert r.status_code == 200, r.text
    seen = r.json()["echo"]
    assert (seen["path"], seen["query"]) == ("/orders/o-1/as-of", "at=2026-11-24T10:00:00%2B00:00")
    assert seen["headers"]["x-user-id"] == account["user_id"]
    r = await shop.api.get("/api/v1/orders/o-1/as-of?version=2")
    assert_error_shape(r, 401, "unauthenticated")


async def test_path_parameters_cannot_escape_their_segment(shop: Shop) -> None:
    _, auth = await shop.shopper()
    r = await shop.api.get("/api/v1/orders/a%3Fb%23c", headers=auth)
    assert r.json()["echo"]["path"] == "/orders/a%3Fb%23c"
    assert r.json()["echo"]["query"] == ""


@pytest.mark.parametrize(
    "path, upstream_path",
    [("/api/v1/notifications", "/notifications"), ("/api/v1/loyalty/points", "/points")],
)
async def test_my_routes_go_to_their_service(shop: Shop, path: str, upstream_path: str) -> None:
    account, auth = await shop.shopper()
    r = await shop.api.get(path, headers=auth)
    assert r.status_code == 200
    assert r.json()["echo"]["path"] == upstream_path
    assert r.json()["echo"]["headers"]["x-user-id"] == account["user_id"]


async def test_a_redirect_is_relayed_not_followed_and_no_cookie_is_kept(shop: Shop) -> None:
    _, auth = await shop.shopper()
    r = await shop.api.get(
        "/api/v1/orders?status=303&location=/orders/o1&cookie=of-this-user", headers=auth
    )
    assert r.status_code == 303
    assert r.headers["Location"] == "/orders/o1"
    assert "set-cookie" not in r.headers
    _, other_auth = await shop.shopper()
    assert (await shop.api.get("/api/v1/orders", headers=other_auth)).status_code == 200
    assert [seen["path"] for seen in shop.recorder.seen] == ["/orders", "/orders"]
    assert "cookie" not in shop.recorder.seen[1]["headers"]  # never another user's


async def test_a_service_that_is_down_is_503_at_once(shop: Shop) -> None:
    started = time.monotonic()
    r = await shop.api.get("/api/v1/products", headers={"X-Correlation-ID": "cid-down"})
    body = assert_error_shape(r, 503, "unavailable")
    assert body["error"]["message"] == "catalog is unavailable"
    assert body["correlation_id"] == "cid-down"
    assert time.monotonic() - started < 2


async def test_a_service_that_hangs_is_503_after_the_timeout(shop: Shop) -> None:
    _, auth = await shop.shopper()
    started = time.monotonic()
    r = await shop.api.get("/api/v1/payments", headers=auth)
    assert_error_shape(r, 503, "unavailable")
    assert 0.4 < time.monotonic() - started < 3


# -- rate limits ------------------------------------------------------------------------------
async def test_a_burst_from_one_ip_is_429_with_retry_after(make_shop: MakeShop) -> None:
    shop = await make_shop(rate_per_ip=5, rate_window_s=60)
    # 12 requests span at most two windows, so one window sees more than 5 of them
    answers = [await shop.api.get("/api/v1/products") for _ in range(12)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert all(r.status_code in (503, 429) for r in answers)  # catalog is down: 503 if let in
    r = refused[0]
    body = assert_error_shape(r, 429, "rate_limited")
    assert "ip" in body["error"]["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    keys = [k async for k in shop.redis.scan_iter(match=f"{shop.prefix}ratelimit:ip:*")]
    assert keys and all(0 < ttl <= 60 for ttl in [await shop.redis.ttl(k) for k in keys])
    # the documentation is never limited
    assert (await shop.api.get("/docs")).status_code == 200
    assert (await shop.api.get("/openapi.json")).status_code == 200


async def test_a_burst_from_one_user_is_429_while_others_go_on(make_shop: MakeShop) -> None:
    shop = await make_shop(rate_per_user=4, rate_window_s=60)
    _, auth = await shop.shopper()
    _, other_auth = await shop.shopper()
    answers = [await shop.api.get("/api/v1/users/me", headers=auth) for _ in range(10)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert "user" in refused[0].json()["error"]["message"]
    assert "Retry-After" in refused[0].headers
    # same IP, another user: not refused by the first one's counter
    assert (await shop.api.get("/api/v1/users/me", headers=other_auth)).status_code == 200


async def test_the_gateways_own_refusals_carry_the_correlation_id_in_the_one_shape(
    make_shop: MakeShop,
) -> None:
    """A 404 (no such route) and a 429 (answered by the rate limit, before any route) echo the
    client's X-Correlation-ID, or make one, in the header and in the body."""
    shop = await make_shop(rate_per_ip=1, rate_window_s=60)
    r = await shop.api.get("/api/v1/no-such-route", headers={"X-Correlation-ID": "cid-404"})
    assert assert_error_shape(r, 404, "not_found")["correlation_id"] == "cid-404"

    # a limit of 1 a window: of the next two, at least one is refused (two windows at most)
    answers = [
        await shop.api.get("/api/v1/no-such-route", headers={"X-Correlation-ID": "cid-429"})
        for _ in range(2)
    ]
    refused = next(r for r in answers if r.status_code == 429)
    assert assert_error_shape(refused, 429, "rate_limited")["correlation_id"] == "cid-429"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60

    unlimited = await make_shop()
    made = await unlimited.api.get("/api/v1/no-such-route", headers={"Accept-Encoding": "gzip"})
    body = assert_error_shape(made, 404, "not_found")
    assert uuid.UUID(body["correlation_id"])
    assert made.headers.get_list("X-Correlation-ID") == [body["correlation_id"]]


@dataclass
class Counters:
    """A real Redis for a limiter, under a key prefix of the test's own, emptied afterwards."""

    redis: Redis
    prefix: str


@pytest.fixture
async def counters() -> AsyncIterator[Counters]:
    redis = connect_redis(REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    try:
        yield Counters(redis, prefix)
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_the_rate_limit_loads_its_script_and_reads_a_key_along(
    monkeypatch: pytest.MonkeyPatch, counters: Counters
) -> None:
    """One round trip a request: the counters by EVALSHA, the session read in the same pipeline.
    A script Redis does not know (first use, a restart) is loaded, and the request counted."""
    unknown = f"{ratelimit._HIT}-- {uuid.uuid4()}\n"  # a text, and so a SHA, never loaded before
    monkeypatch.setattr(ratelimit, "_HIT", unknown)
    monkeypatch.setattr(ratelimit, "_HIT_SHA", hashlib.sha1(unknown.encode()).hexdigest())
    redis, prefix = counters.redis, counters.prefix
    limiter = RateLimiter(  # one window throughout
        redis, per_ip=10, per_user=1, window_s=60, prefix=prefix, clock=lambda: 1_800_000_000.0
    )
    session = f"{prefix}session:j1"
    try:
        await redis.set(session, "u1", ex=60)
        first = await limiter.hit(CLIENT_IP, "u1", read_along=session)
        assert first.verdict.allowed
        assert (first.was_read, first.value) == (True, "u1")
        second = await limiter.hit(CLIENT_IP, "u1", read_along=f"{prefix}session:gone")
        assert (second.was_read, second.value) == (True, None)
        assert second.verdict.refused_by is not None and second.verdict.refused_by.scope == "user"
        unread = await limiter.hit(CLIENT_IP, None)
        assert unread.verdict.allowed and not unread.was_read
        found = [k async for k in redis.scan_iter(match=f"{prefix}ratelimit:*")]
        assert len(found) == 2
        assert all(0 < ttl <= 60 for ttl in [await redis.ttl(k) for k in found])
    finally:
        await limiter.close()


async def test_requests_arriving_together_are_counted_in_one_pipeline_each_as_alone(
    counters: Counters,
) -> None:
    """The hits that arrive while a pipeline is in flight share the next (one round trip for
    all), and each request is judged by its own counters as if it had gone alone."""
    redis, prefix = counters.redis, counters.prefix
    limiter = RateLimiter(
        redis, per_ip=15, per_user=4, window_s=60, prefix=prefix, clock=lambda: 1_800_000_000.0
    )
    session = f"{prefix}session:j1"
    try:
        await redis.set(session, "u1", ex=60)
        counted = await asyncio.gather(
            *(limiter.hit(CLIENT_IP, None) for _ in range(10)),
            *(limiter.hit("10.9.9.9", "u1", read_along=session) for _ in range(10)),
        )
        by_ip, by_user = counted[:10], counted[10:]
        assert all(c.verdict.allowed and not c.was_read for c in by_ip)  # 10 of 15
        assert sum(c.verdict.allowed for c in by_user) == 4  # the user's 4, then refused
        refused = [c.verdict.refused_by for c in by_user if not c.verdict.allowed]
        assert {r.scope for r in refused if r is not None} == {"user"}
        assert all((c.was_read, c.value) == (True, "u1") for c in by_user)
        assert not any(c.uncounted for c in counted)
        # 20 requests in far fewer round trips: the first alone, the others behind it
        assert limiter.counting.items == 20 and limiter.counting.groups <= 3
    finally:
        await limiter.close()


async def test_a_command_that_fails_fails_its_own_request_not_its_group(
    counters: Counters,
) -> None:
    """A counter Redis cannot increment (a key of another type) leaves that request uncounted
    (let through, as when Redis is away); the others of its pipeline are counted."""
    redis, prefix = counters.redis, counters.prefix
    now = 1_800_000_000.0
    limiter = RateLimiter(
        redis, per_ip=5, per_user=5, window_s=60, prefix=prefix, clock=lambda: now
    )
    broken = ratelimit.counter_key(prefix, "ip", "10.6.6.6", ratelimit.window_at(now, 60))
    try:
        await redis.rpush(broken, "not a counter")
        counted = await asyncio.gather(
            limiter.hit(CLIENT_IP, None),
            limiter.hit(CLIENT_IP, None),
            limiter.hit("10.6.6.6", None),
            limiter.hit(CLIENT_IP, None),
        )
        assert [c.uncounted for c in counted] == [False, False, True, False]
        assert all(c.verdict.allowed for c in counted)
        ip_key = ratelimit.counter_key(prefix, "ip", CLIENT_IP, ratelimit.window_at(now, 60))
        assert await redis.get(ip_key) == b"3"
        assert limiter.counting.groups < 4  # they did share pipelines
    finally:
        await limiter.close()


async def test_without_redis_public_routes_go_on_and_sessions_are_503(make_shop: MakeShop) -> None:
    """Redis down: the rate limit lets requests through; nobody can be authenticated."""
    shop = await make_shop(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    started = time.monotonic()
    r = await shop.api.get("/api/v1/products")
    assert r.json()["error"]["message"] == "catalog is unavailable"  # let through, to the catalog
    token = Tokens(SECRET, ttl_s=60).issue(user_id="u1", email="a@example.com", role="customer")
    r = await shop.api.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {token.access_token}"}
    )
    body = assert_error_shape(r, 503, "unavailable")
    assert body["error"]["message"] == "the session store is unavailable"
    assert time.monotonic() - started < 3


# -- transport --------------------------------------------------------------------------------
async def test_large_answers_are_gzipped_when_the_client_accepts_it(shop: Shop) -> None:
    _, auth = await shop.shopper()
    r = await shop.api.get(
        "/api/v1/notifications?pad=5000", headers={**auth, "Accept-Encoding": "gzip"}
    )
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "gzip"
    assert uuid.UUID(r.headers["X-Correlation-ID"])
    assert len(r.json()["padding"]) == 5_000  # httpx inflated it
    on_the_wire = await _raw_body(shop, "/api/v1/notifications?pad=5000", auth)
    assert len(on_the_wire) < 1_000
    assert len(gzip.decompress(on_the_wire)) > 5_000

    docs = await shop.api.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert docs.headers["Content-Encoding"] == "gzip"

    plain = await shop.api.get(
        "/api/v1/notifications?pad=5000", headers={**auth, "Accept-Encoding": "identity"}
    )
    assert "Content-Encoding" not in plain.headers
    small = await shop.api.get("/api/v1/users/me", headers={**auth, "Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers  # under 500 bytes: not worth it


async def _raw_body(shop: Shop, path: str, headers: dict[str, str]) -> bytes:
    """The body as it travelled, not inflated."""
    headers = {**headers, "Accept-Encoding": "gzip"}
    async with shop.api.stream("GET", path, headers=headers) as r:
        return b"".join([chunk async for chunk in r.aiter_raw()])


async def test_the_openapi_documents_the_bodies(shop: Shop) -> None:
    spec = (await shop.api.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert {"Registration", "Login", "PlaceOrder", "NewProduct", "Restock"} <= set(schemas)
    assert schemas["PlaceOrder"]["additionalProperties"] is False
    assert "/api/v1/orders" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
