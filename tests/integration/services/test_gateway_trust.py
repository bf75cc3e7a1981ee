"""What the gateway trusts: roles only from the session, client addresses only from configured
proxies, and Redis through a bounded pool that waits rather than fails (real Redis, real users
service, the real uvicorn server configured as the runtime configures it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import uvicorn
from prometheus_client import REGISTRY

from eventshop.platform.runtime import http_server_config
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS
from eventshop.services.gateway.adapters.upstream import Upstreams
from eventshop.services.gateway.service import connect_redis
from eventshop.services.gateway.settings import GatewaySettings
from tests.integration.services.test_gateway import (  # noqa: F401  (fixtures by name)
    PASSWORD,
    REDIS_URL,
    SECRET,
    MakeShop,
    Shop,
    closed_port,
    gateway_app,
    make_shop,
    silent_port,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def gw(make_shop: MakeShop) -> Shop:  # noqa: F811
    return await make_shop()


# -- the platform's own proofs ---------------------------------------------------------------
async def test_a_service_refusing_the_gateways_proof_is_a_503_to_the_client_not_a_401(
    make_shop: MakeShop,  # noqa: F811
) -> None:
    """A service whose clock is more than 30 s off the gateway's, or that has another internal
    key, refuses every proof: the client's credentials are not at fault, and a 401 would send it
    to log in again and again (seen under `eventshop chaos clock-skew`)."""
    account, _ = await (await make_shop()).shopper()
    gw = await make_shop(identity_key=b"not the key the services check proofs with")
    # a login's password check is a route that answers the gateway only
    r = await gw.api.post(
        "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable"
    assert r.headers["Retry-After"] == "1"
    refused = REGISTRY.get_sample_value(
        "eventshop_gateway_upstream_requests_total",
        {"upstream": "users", "method": "POST", "outcome": "proof_refused"},
    )
    assert refused is not None and refused >= 1


# -- roles come from the session --------------------------------------------------------------
async def test_a_customer_token_re_signed_as_admin_is_refused(gw: Shop) -> None:
    _, auth = await gw.shopper()
    token = auth["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["role"] == "customer"
    forged = jwt.encode({**claims, "role": "admin"}, SECRET, algorithm="HS256")
    product = {"sku": "FORGED", "name": "x", "price_minor": 1, "currency": "EUR"}
    r = await gw.api.post(
        "/api/v1/products", json=product, headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert gw.recorder.seen == []
    # the genuine token still works, as the customer it is
    assert (await gw.api.get("/api/v1/users/me", headers=auth)).status_code == 200


# -- forwarded addresses only from configured proxies ------------------------------------------
@contextlib.asynccontextmanager
async def served_gateway(platform: PlatformSettings, per_ip: int) -> AsyncIterator[str]:
    """A gateway (services all down behind it) on a loopback port, served as the runtime serves
    it; its base URL."""
    settings = GatewaySettings(
        jwt_secret=SECRET,  # type: ignore[arg-type]
        rate_per_ip=per_ip,
        rate_window_s=60,
        redis_prefix=f"test:{uuid.uuid4().hex[:10]}:",
    )
    redis = connect_redis(REDIS_URL)
    down = f"http://127.0.0.1:{closed_port()}"
    upstreams = Upstreams.at(dict.fromkeys(BACKENDS, down), timeout_s=0.5, connect_timeout_s=0.5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        http_server_config(gateway_app(settings, redis, upstreams), port, platform)
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="the gateway serving")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await upstreams.aclose()
        await redis.aclose()


async def statuses_with_rotating_forwarded_for(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url) as client:
        statuses = []
        for i in range(n):
            forwarded = {"X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"}
            statuses.append((await client.get("/api/v1/products", headers=forwarded)).status_code)
        return statuses


async def test_a_rotating_x_forwarded_for_does_not_escape_the_per_ip_limit() -> None:
    async with served_gateway(PlatformSettings(), per_ip=10) as url:
        statuses = await statuses_with_rotating_forwarded_for(url, 40)
    assert statuses.count(429) == 30  # all but the first ten: one client, 127.0.0.1


async def test_a_configured_proxy_is_believed() -> None:
    behind_a_proxy = PlatformSettings(trusted_proxies=["127.0.0.1"])
    async with served_gateway(behind_a_proxy, per_ip=10) as url:
        statuses = await statuses_with_rotating_forwarded_for(url, 40)
    assert 429 not in statuses  # forty clients, one request each


def uncounted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "eventshop_gateway_ratelimit_uncounted_total", {"outcome": outcome}
    )
    return value or 0.0


# -- a bounded Redis pool -----------------------------------------------------------------------
async def test_200_concurrent_requests_get_no_503_while_redis_is_up(
    make_shop: MakeShop,  # noqa: F811
) -> None:
    # the users service behind may take its time with 200 at once: only Redis is on trial
    gw = await make_shop(upstream_timeout_s=30.0)
    _, auth = await gw.shopper()
    answers = await asyncio.gather(
        *(gw.api.get("/api/v1/users/me", headers=auth) for _ in range(200))
    )
    assert sorted({r.status_code for r in answers}) == [200]


async def test_with_redis_away_logins_fail_closed_and_the_catalog_stays_open(
    make_shop: MakeShop,  # noqa: F811
) -> None:
    away = await make_shop(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    refused_before, let_through_before = uncounted("refused"), uncounted("let_through")
    login = await away.api.post(
        "/api/v1/auth/login", json={"email": "a@example.com", "password": "whatever-it-is"}
    )
    assert login.status_code == 503, login.text
    assert login.headers["retry-after"] == "1"
    assert login.json()["error"]["code"] == "unavailable"
    # the public catalog is let through uncounted: the answer is the catalog's own (down here)
    products = await away.api.get("/api/v1/products")
    assert products.json()["error"]["message"] == "catalog is unavailable"
    assert uncounted("refused") == refused_before + 1
    assert uncounted("let_through") == let_through_before + 1
