"""The gateway's security findings, each against the real thing: real Redis, the gateway's app
built by its own composition root (`open_resources`, as `eventshop run gateway` does), served by
the runtime's own `http_servers` on real loopback ports where the HTTP server is on trial.

1. who the caller is comes from the session, and no JWT key is a constant of the code;
2. X-Forwarded-For is believed only from configured proxies;
3. Redis through a bounded pool that waits; logins fail closed when Redis is away;
4. /metrics is not on the gateway's public port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import jwt
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import BlockingConnectionPool, Redis

from eventshop.platform.bus.node import BusNode
from eventshop.platform.runtime import http_servers
from eventshop.platform.service import ServiceContext, build_app
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS
from eventshop.services.gateway.service import Context, Resources, open_resources
from eventshop.services.gateway.service import definition as gateway_definition
from eventshop.services.gateway.settings import GatewaySettings
from tests.integration.services.test_gateway import (  # noqa: F401  (fixtures by name)
    REDIS_URL,
    MakeShop,
    RecordingService,
    assert_error_shape,
    closed_port,
    make_shop,
    silent_port,
)
from tests.support.loopback import serving
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

#: the development key that was a constant of the code (gateway/settings.py, DEV_JWT_SECRET)
#: until the gateway took this installation's own: anyone who had read the code knew it
FORMER_CODE_CONSTANT = "dev-only-secret-never-use-it-in-production"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gateway_context(
    settings: GatewaySettings, platform: PlatformSettings, res: Resources
) -> Context:
    """The gateway's context as `open_service` makes it (no pool, no bus: its routes use
    neither, and its /metrics reads no queue)."""
    no_bus = cast(BusNode, SimpleNamespace(consumer=None, connection=None))
    return ServiceContext(
        name="gateway", platform=platform, settings=settings, resources=res, pool=None, bus=no_bus
    )


@dataclass
class Gateway:
    api: httpx.AsyncClient
    ctx: Context
    redis: Redis
    prefix: str


@contextlib.asynccontextmanager
async def gateway_in_process(
    platform: PlatformSettings, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The gateway's app, from its own `open_resources`, with every service behind it a
    `RecordingService` that answers at once; driven in process from 203.0.113.7."""
    recorder = RecordingService()
    async with serving(recorder.app()) as (recorder_url,):
        prefix = f"test:{uuid.uuid4().hex[:10]}:"
        settings = GatewaySettings(
            **{
                "jwt_secret": "a-security-test-secret-of-32-characters-or-more",
                "rate_per_ip": 10_000,
                "rate_per_user": 10_000,
                "rate_window_s": 3_600,
                "redis_prefix": prefix,
                "upstreams": dict.fromkeys(BACKENDS, recorder_url),
                **overrides,
            }
        )
        async with open_resources(settings, platform) as resources:
            ctx = gateway_context(settings, platform, resources)
            app = build_app(gateway_definition, ctx)
            transport = httpx.ASGITransport(app, client=("203.0.113.7", 40_000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
                try:
                    yield Gateway(api=api, ctx=ctx, redis=resources.redis, prefix=prefix)
                finally:
                    await wipe(prefix)


async def wipe(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def served(
    platform: PlatformSettings, **overrides: Any
) -> AsyncIterator[tuple[str, str, Gateway]]:
    """The gateway served as the runtime serves it (`http_servers`, the gateway's definition,
    its public and its metrics port): the public URL, the metrics URL, and the gateway."""
    async with gateway_in_process(platform, **overrides) as gw:
        public, internal = free_port(), free_port()
        servers = http_servers(gateway_definition, gw.ctx, public, internal)
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        try:
            await eventually(
                lambda: all(s.started for s in servers) or any(t.done() for t in tasks),
                what="the gateway serving",
            )
            assert all(s.started for s in servers)
            yield f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}", gw
        finally:
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*tasks)


@pytest.fixture
def platform(settings: PlatformSettings) -> PlatformSettings:
    """The tests' platform settings, on the tests' Redis database."""
    return settings.model_copy(update={"redis_url": REDIS_URL})


def uncounted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "eventshop_gateway_ratelimit_uncounted_total", {"outcome": outcome}
    )
    return value or 0.0


# -- 1. who the caller is comes from the server ------------------------------------------------
def re_signed(token: str, key: str, **claims: str) -> str:
    original = jwt.decode(token, key, algorithms=["HS256"])
    return jwt.encode({**original, **claims}, key, algorithm="HS256")


async def test_in_development_no_known_key_signs_and_a_re_signed_token_gets_no_further(
    make_shop: MakeShop,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(tmp_path))
    shop = await make_shop(jwt_secret=None)  # development, no key configured
    account, auth = await shop.shopper()
    token = auth["Authorization"].removeprefix("Bearer ")
    # signed with this installation's own key, made at start and kept 0600
    key = (tmp_path / "gateway-jwt").read_text().strip()
    assert (tmp_path / "gateway-jwt").stat().st_mode & 0o777 == 0o600
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert claims["role"] == "customer"
    # the session holds who the server said the caller is, not only whose it is
    held = await shop.redis.get(f"{shop.prefix}session:{claims['jti']}")
    assert held is not None
    assert json.loads(held) == {
        "sub": account["user_id"],
        "role": "customer",
        "email": claims["email"],
    }

    product = {"sku": "FORGED", "name": "x", "price_minor": 1, "currency": "EUR"}
    the_old_constant = jwt.encode({**claims, "role": "admin"}, FORMER_CODE_CONSTANT, "HS256")
    as_admin = re_signed(token, key, role="admin")  # the live jti: a key that leaked
    for forged in (the_old_constant, as_admin):
        r = await shop.api.post(
            "/api/v1/products", json=product, headers={"Authorization": f"Bearer {forged}"}
        )
        assert_error_shape(r, 401, "unauthenticated")
    # another's address, on one's own live session: their mail is not one's to read
    as_someone_else = re_signed(token, key, email="victim@example.com")
    r = await shop.api.get(
        "/api/v1/notifications", headers={"Authorization": f"Bearer {as_someone_else}"}
    )
    assert_error_shape(r, 401, "unauthenticated")
    assert shop.recorder.seen == []
    # the genuine token still works, as the customer it is
    me = await shop.api.get("/api/v1/users/me", headers=auth)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "customer"


# -- 2. forwarded addresses only from configured proxies ---------------------------------------
async def get_with_forwarded_for(url: str, addresses: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url) as client:
        return [
            await client.get("/api/v1/products", headers={"X-Forwarded-For": address})
            for address in addresses
        ]


async def counted_ips(gw: Gateway) -> set[str]:
    keys = [k.decode() async for k in gw.redis.scan_iter(match=f"{gw.prefix}ratelimit:ip:*")]
    return {key.split(":")[-2] for key in keys}


ROTATING = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)]


async def test_a_rotating_x_forwarded_for_is_one_client_unless_its_proxy_is_trusted(
    platform: PlatformSettings,
) -> None:
    async with served(platform, rate_per_ip=10) as (url, _, gw):
        answers = await get_with_forwarded_for(url, ROTATING)
        assert await counted_ips(gw) == {"127.0.0.1"}  # the address that connected
    assert [r.status_code for r in answers] == [200] * 10 + [429] * 50
    refused = answers[-1]
    assert_error_shape(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1


async def test_behind_a_configured_proxy_the_forwarded_address_is_counted(
    platform: PlatformSettings,
) -> None:
    behind_a_proxy = platform.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    async with served(behind_a_proxy, rate_per_ip=10) as (url, _, gw):
        rotating = await get_with_forwarded_for(url, ROTATING)
        assert await counted_ips(gw) == set(ROTATING)
        one_client = await get_with_forwarded_for(url, ["198.51.100.9"] * 11)
    assert {r.status_code for r in rotating} == {200}  # sixty clients, one request each
    assert [r.status_code for r in one_client] == [200] * 10 + [429]


# -- 3. a bounded Redis pool, and failing closed where it matters -------------------------------
async def test_200_concurrent_requests_wait_for_a_connection_and_are_all_counted(
    platform: PlatformSettings,
) -> None:
    before = uncounted("let_through")
    # far fewer connections than requests at once: they must wait for one, not fail
    async with gateway_in_process(platform, redis_max_connections=4) as gw:
        issued = await gw.ctx.resources.gateway.auth.login(
            user_id=str(uuid.uuid4()), email="many@example.com", role="customer"
        )
        auth = {"Authorization": f"Bearer {issued.access_token}"}
        answers = await asyncio.gather(
            *(gw.api.get("/api/v1/orders", headers=auth) for _ in range(200))
        )
        counters = [k async for k in gw.redis.scan_iter(match=f"{gw.prefix}ratelimit:ip:*")]
        counts = [int(await gw.redis.get(k) or 0) for k in counters]
        pool = gw.redis.connection_pool  # the one the composition root built from its settings
    assert sorted({r.status_code for r in answers}) == [200]
    assert counts == [200]  # every request counted, none let through uncounted
    assert uncounted("let_through") == before
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 4


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/auth/login", {"email": "a@example.com", "password": "whatever"}),
        ("/api/v1/auth/register", {"email": "a@example.com", "password": "pass-word", "name": "A"}),
    ],
)  # fmt: skip
async def test_with_redis_away_password_routes_fail_closed_and_others_go_on(
    platform: PlatformSettings, path: str, body: dict[str, str]
) -> None:
    away = platform.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    refused_before, let_through_before = uncounted("refused"), uncounted("let_through")
    async with gateway_in_process(away) as gw:
        attempt = await gw.api.post(path, json=body)
        catalog = await gw.api.get("/api/v1/products")
    assert_error_shape(attempt, 503, "unavailable")
    assert attempt.headers["retry-after"] == "1"
    assert catalog.status_code == 200, catalog.text  # let through, uncounted
    assert uncounted("refused") == refused_before + 1
    assert uncounted("let_through") == let_through_before + 1


# -- 4. /metrics only on the internal port ------------------------------------------------------
async def test_the_public_port_does_not_serve_metrics_the_internal_one_does(
    platform: PlatformSettings,
) -> None:
    assert gateway_definition.metrics_port not in (None, gateway_definition.port)
    async with served(platform) as (public, internal, _), httpx.AsyncClient() as client:
        on_public = await client.get(f"{public}/metrics")
        on_internal = await client.get(f"{internal}/metrics")
        elsewhere_internal = await client.get(f"{internal}/api/v1/products")
        alive = await client.get(f"{public}/health/live")
    assert_error_shape(on_public, 404, "not_found")
    assert "eventshop_gateway" not in on_public.text
    assert on_internal.status_code == 200
    assert on_internal.headers["content-type"].startswith("text/plain")
    assert "eventshop_gateway_ratelimit_uncounted_total" in on_internal.text
    assert_error_shape(elsewhere_internal, 404, "not_found")  # metrics, and nothing else
    assert alive.status_code == 200
