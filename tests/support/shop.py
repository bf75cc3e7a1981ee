"""A client of the running platform's public API, for end-to-end tests and the order benchmark.

Everything goes over HTTP to the gateway, as a user of the shop would; the only other reads
are the invariant check (eventshop.invariants), which an operator runs against the databases.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from eventshop.services import PORTS
from eventshop.tooling.shopclient import ADMIN, ADMIN_PASSWORD
from tests.support.polling import eventually

API = f"http://127.0.0.1:{PORTS['gateway']}/api/v1"
PASSWORD = "e2e-password-1"
FINAL = ("CONFIRMED", "CANCELLED")


@dataclass
class User:
    email: str
    token: str
    user_id: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Shop:
    client: httpx.AsyncClient
    admin: User | None = None
    order_ids: list[str] = field(default_factory=list)

    async def register(
        self, email: str | None = None, *, domain: str = "example.com", password: str = PASSWORD
    ) -> User:
        email = email or f"u{uuid.uuid4().hex[:10]}@{domain}"
        r = await self.client.post(
            f"{API}/auth/register", json={"email": email, "password": password, "name": "E2E"}
        )
        assert r.status_code in (201, 409), r.text
        r = await self.client.post(f"{API}/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        user = User(email, r.json()["access_token"])
        me = await self.client.get(f"{API}/users/me", headers=user.auth)
        assert me.status_code == 200, me.text
        user.user_id = me.json()["user_id"]
        return user

    async def as_admin(self) -> User:
        if self.admin is None:
            self.admin = await self.register(ADMIN, password=ADMIN_PASSWORD)
        return self.admin

    async def product(self, *, stock: int, price_minor: int = 1_000, currency: str = "EUR") -> str:
        """A new product with `stock` units, once inventory and orders have both heard of it."""
        admin = await self.as_admin()
        sku = f"E2E-{uuid.uuid4().hex[:8]}"
        r = await self.client.post(
            f"{API}/products",
            headers=admin.auth,
            json={
                "sku": sku,
                "name": f"Product {sku}",
                "price_minor": price_minor,
                "currency": currency,
            },
        )
        assert r.status_code == 201, r.text
        if stock:
            await eventually(lambda: self._restock(sku, stock), True, timeout=20, interval=0.1)
        return sku

    async def _restock(self, sku: str, quantity: int) -> bool:
        admin = await self.as_admin()
        r = await self.client.post(
            f"{API}/stock/{sku}/restock", headers=admin.auth, json={"quantity": quantity}
        )
        return r.status_code == 200

    async def place(
        self,
        user: User,
        lines: list[tuple[str, int]],
        *,
        token: str = "tok_visa",
        key: str | None = None,
    ) -> str:
        """Place an order; retries while the orders service has not yet heard of a new product."""
        body = {"lines": [{"sku": s, "quantity": q} for s, q in lines], "payment_token": token}
        headers = {**user.auth, "Idempotency-Key": key or str(uuid.uuid4())}
        deadline = time.monotonic() + 20
        while True:
            r = await self.client.post(f"{API}/orders", json=body, headers=headers)
            if r.status_code == 202:
                oid = str(r.json()["order_id"])
                self.order_ids.append(oid)
                return oid
            if r.status_code in (422, 429, 503) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                continue
            raise AssertionError(f"place order -> {r.status_code}: {r.text}")

    async def order(self, user: User, order_id: str) -> dict[str, Any]:
        r = await self.client.get(f"{API}/orders/{order_id}", headers=user.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def final(self, user: User, order_id: str, timeout: float = 40) -> dict[str, Any]:
        async def status() -> str:
            return str((await self.order(user, order_id))["status"])

        await eventually(status, lambda s: s in FINAL, timeout=timeout, interval=0.1)
        return await self.order(user, order_id)

    async def stock(self, sku: str) -> dict[str, Any]:
        admin = await self.as_admin()
        r = await self.client.get(f"{API}/stock/{sku}", headers=admin.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def payments(self, user: User) -> list[dict[str, Any]]:
        r = await self.client.get(f"{API}/payments", headers=user.auth)
        assert r.status_code == 200, r.text
        body = r.json()
        return list(body["payments"] if isinstance(body, dict) else body)
