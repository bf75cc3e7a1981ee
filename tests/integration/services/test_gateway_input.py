"""Hostile and careless input at the gateway: a 4xx in the one JSON shape, before any service
is bothered, on every route that takes it (the gateway's own stack, real users service, real
Redis; see test_gateway.py for the fixtures)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.services.test_gateway import (  # noqa: F401  (fixtures by name)
    ADMIN_EMAIL,
    PASSWORD,
    MakeShop,
    Shop,
    make_shop,
    silent_port,
)

pytestmark = pytest.mark.integration

NUL = "a\u0000b"
REGISTER, LOGIN = "/api/v1/auth/register", "/api/v1/auth/login"
PRODUCTS, ORDERS = "/api/v1/products", "/api/v1/orders"
PRODUCT, RESTOCK = "/api/v1/products/S1", "/api/v1/stock/S1/restock"


def product(**fields: object) -> dict[str, object]:
    return {"name": "n", "price_minor": 1, "currency": "EUR", **fields}


def order(**line: object) -> dict[str, object]:
    return {"lines": [{"sku": "S1", "quantity": 1, **line}]}


@pytest.fixture
async def gw(make_shop: MakeShop) -> Shop:  # noqa: F811
    return await make_shop()


def assert_refused(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] and body["error"]["message"] and body["correlation_id"]


async def admin(gw: Shop) -> dict[str, str]:
    _, auth = await gw.shopper(ADMIN_EMAIL)
    return auth


async def test_a_nul_in_any_text_field_is_422(gw: Shop) -> None:
    _, auth = await gw.shopper()
    boss = await admin(gw)
    sent = [
        ("POST", REGISTER, {"email": NUL + "@x.io", "password": PASSWORD, "name": "A"}, {}),
        ("POST", REGISTER, {"email": "n@x.io", "password": PASSWORD, "name": NUL}, {}),
        ("POST", LOGIN, {"email": NUL, "password": PASSWORD}, {}),
        ("POST", PRODUCTS, product(sku="S1", name=NUL), boss),
        ("PUT", PRODUCT, product(name=NUL, active=True), boss),
        ("POST", ORDERS, order(sku=NUL), auth),
        ("POST", ORDERS, {**order(), "payment_token": NUL}, auth),
    ]
    for method, path, body, headers in sent:
        assert_refused(await gw.api.request(method, path, json=body, headers=headers), 422)
    assert gw.recorder.seen == []


@pytest.mark.parametrize(
    "path", ["/api/v1/products/%00", "/api/v1/events?type=%00", "/api/v1/orders/a%00b"]
)
async def test_a_nul_in_the_url_is_400(gw: Shop, path: str) -> None:
    boss = await admin(gw)
    assert_refused(await gw.api.get(path, headers=boss), 400)
    assert gw.recorder.seen == []


async def test_integers_beyond_what_the_database_holds_are_422(gw: Shop) -> None:
    _, auth = await gw.shopper()
    boss = await admin(gw)
    huge = 10**30
    sent = [
        ("POST", PRODUCTS, product(sku="S1", price_minor=huge), boss),
        ("PUT", PRODUCT, product(price_minor=huge, active=True), boss),
        ("POST", RESTOCK, {"quantity": huge}, boss),
        ("POST", ORDERS, order(quantity=huge), auth),
    ]
    for method, path, body, headers in sent:
        assert_refused(await gw.api.request(method, path, json=body, headers=headers), 422)
    assert gw.recorder.seen == []


async def test_a_body_of_20_mb_is_413(gw: Shop) -> None:
    _, auth = await gw.shopper()
    big = b'{"lines": [' + b" " * (20 * 1024 * 1024) + b"]}"
    r = await gw.api.post(
        "/api/v1/orders", content=big, headers={**auth, "content-type": "application/json"}
    )
    assert_refused(r, 413)
    assert gw.recorder.seen == []


async def test_an_empty_idempotency_key_is_422(gw: Shop) -> None:
    _, auth = await gw.shopper()
    r = await gw.api.post(
        "/api/v1/orders",
        json={"lines": [{"sku": "S1", "quantity": 1}]},
        headers={**auth, "Idempotency-Key": ""},
    )
    assert_refused(r, 422)
    assert gw.recorder.seen == []


async def test_an_order_without_a_key_gets_one_of_the_gateways(gw: Shop) -> None:
    _, auth = await gw.shopper()
    r = await gw.api.post(
        "/api/v1/orders", json={"lines": [{"sku": "S1", "quantity": 1}]}, headers=auth
    )
    assert r.status_code == 202
    [seen] = gw.recorder.seen
    assert seen["headers"]["idempotency-key"].startswith("gateway-")
