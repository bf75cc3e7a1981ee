"""The services' own ports believe no identity the gateway did not prove: a local process that
sets X-User-* headers is refused, on every service, for reads and writes alike."""

from __future__ import annotations

import httpx
import pytest

from eventshop.services import PORTS
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e

ADMIN = {"X-User-Id": "someone", "X-User-Role": "admin", "X-User-Email": "eve@example.com"}

#: a route of each service that needs an identity, and what the attack would do with it
ATTEMPTS = [
    ("orders", "POST", "/orders", {"lines": [{"sku": "X", "quantity": 1}]}),
    ("orders", "GET", "/orders", None),
    ("payments", "GET", "/payments", None),
    ("catalog", "PUT", "/products/X", {"name": "x", "price_minor": 1, "currency": "EUR",
                                       "active": True}),
    ("inventory", "POST", "/stock/X/restock", {"quantity": 5}),
    ("users", "GET", "/users/me", None),
    ("users", "POST", "/sessions/verify-password", {"email": "a@example.com", "password": "x"}),
    ("notifications", "GET", "/notifications", None),
    ("loyalty", "GET", "/points", None),
    ("archive", "GET", "/events", None),
]  # fmt: skip


@pytest.mark.parametrize(
    "service, method, path, body", ATTEMPTS, ids=[f"{a[0]} {a[1]} {a[2]}" for a in ATTEMPTS]
)
async def test_identity_headers_without_the_gateways_proof_are_refused(
    shop: Shop, service: str, method: str, path: str, body: object
) -> None:
    url = f"http://127.0.0.1:{PORTS[service]}{path}"
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.request(method, url, headers=ADMIN, json=body)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "identity_proof_refused"


async def test_the_same_calls_through_the_gateway_work(shop: Shop) -> None:
    user = await shop.register()
    r = await shop.client.get("http://127.0.0.1:8000/api/v1/orders", headers=user.auth)
    assert r.status_code == 200
