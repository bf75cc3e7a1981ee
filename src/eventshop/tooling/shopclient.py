"""A client of the shop's public API, as the demo and the order benchmark use it.

Every call goes to the gateway over HTTP, as a shopper's would. A 429 or a 503 is waited out
(the `Retry-After` the gateway gives, else a growing pause) and the call sent again; any other
answer outside `ok` is an error that names the call and what came back.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from eventshop.services import PORTS

#: the public API; EVENTSHOP_API points the demo elsewhere (the compose platform's gateway)
API = os.environ.get("EVENTSHOP_API") or f"http://127.0.0.1:{PORTS['gateway']}/api/v1"
#: the development admin (users makes accounts with this e-mail admins); the demo, the order
#: benchmark and the tests log in as it
ADMIN = "admin@eventshop.test"
ADMIN_PASSWORD = os.environ.get("EVENTSHOP_ADMIN_PASSWORD", "demo-password-1")


class ShopCallError(RuntimeError):
    """A call the shop refused, or kept answering 429/503 to."""


def _url(client: httpx.AsyncClient, path: str) -> str:
    """`path` under the client's own base URL where it has one (the chaos command's, pointed at
    the platform under test), else under API."""
    return path if client.base_url.host else API + path


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    token: str = "",
    ok: tuple[int, ...] = (200, 201, 202),
    retry_on: tuple[int, ...] = (429, 503),
    attempts: int = 60,
    **kwargs: Any,
) -> httpx.Response:
    """`method` `path` (under /api/v1) until the answer is in `ok`; that answer."""
    headers = dict(kwargs.pop("headers", {}) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for attempt in range(attempts):
        r = await client.request(method, _url(client, path), headers=headers, **kwargs)
        if r.status_code in ok:
            return r
        if r.status_code in retry_on:
            wait = float(r.headers.get("Retry-After", "0") or 0) or 0.05 * (attempt + 1)
            await asyncio.sleep(min(wait, 2.0))
            continue
        raise ShopCallError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
    raise ShopCallError(f"{method} {path} kept failing")


async def log_in(client: httpx.AsyncClient, email: str, password: str, name: str = "") -> str:
    """Register `email` (if it is new) and log in; the access token."""
    await call(
        client,
        "POST",
        "/auth/register",
        json={"email": email, "password": password, "name": name or email.split("@")[0]},
        ok=(201, 409),
    )
    r = await call(client, "POST", "/auth/login", json={"email": email, "password": password})
    return str(r.json()["access_token"])


async def create_product(
    client: httpx.AsyncClient, admin: str, sku: str, name: str, price_minor: int
) -> bool:
    """Create a product (as the admin whose token is `admin`); False if the sku exists."""
    r = await call(
        client,
        "POST",
        "/products",
        token=admin,
        ok=(201, 409),
        json={"sku": sku, "name": name, "price_minor": price_minor, "currency": "EUR"},
    )
    return r.status_code == 201


async def restock(client: httpx.AsyncClient, admin: str, sku: str, quantity: int) -> None:
    """Add `quantity` units of `sku`. Inventory learns of a new product from product.created,
    so this answers 404 for a moment after `create_product`: that is waited out too."""
    await call(
        client,
        "POST",
        f"/stock/{sku}/restock",
        token=admin,
        json={"quantity": quantity},
        retry_on=(404, 429, 503),
    )
