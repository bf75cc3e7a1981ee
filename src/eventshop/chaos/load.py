"""The load: a small shop set up over the API, then orders placed at a steady rate, each
retried with its own Idempotency-Key until the platform gives a definite answer.

Every call goes through the client it is given, whose base URL is the gateway's public API on
the platform under test (`Platform.api`): paths here are under it."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from eventshop.tooling.shopclient import ADMIN, ADMIN_PASSWORD, create_product, log_in, restock

#: how an order is paid: mostly captured, some declined by the provider
TOKENS = ("tok_visa",) * 8 + ("tok_mastercard", "tok_decline")
#: an answer that says nothing definite: ask again with the same key
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
PASSWORD = "chaos-password-1"


@dataclass
class Attempt:
    at_s: float
    status: int | None  # None: no answer (connection refused, reset, time-out)
    error: str = ""


@dataclass
class Shopper:
    email: str
    token: str
    user_id: str


@dataclass
class Placement:
    """One order the load wanted: its key, and every answer it got."""

    key: str
    user: Shopper
    lines: list[dict[str, Any]]
    token: str
    attempts: list[Attempt] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)
    accepted_at_s: float | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.order_ids)

    @property
    def refused(self) -> bool:
        """A definite 4xx: the platform said no (not to be retried, not lost)."""
        last = self.attempts[-1].status if self.attempts else None
        return not self.accepted and last is not None and 400 <= last < 500


@dataclass
class Shop:
    admin: str
    skus: list[str]
    rare: str
    users: list[Shopper]


#: orders a shopper places a minute at most: under payments' fraud velocity rule (20 a minute),
#: which would otherwise cancel most of the load as fraud and leave the saga's payment path idle
PER_SHOPPER_PER_MINUTE = 12


async def open_shop(
    client: httpx.AsyncClient, rng: random.Random, *, rate: float, products: int = 12
) -> Shop:
    """Products with stock (one rare, to run out), and enough shoppers for `rate` orders a
    second, made through the API."""
    if not client.base_url.host:
        raise ValueError("the load's client needs the platform's API as its base_url")
    admin = await log_in(client, ADMIN, ADMIN_PASSWORD)
    tag = uuid.uuid4().hex[:6]  # this run's own: a seed run twice must not meet its first run
    skus = []
    for i in range(products):
        sku = f"CHAOS-{tag}-{i:02d}"
        await create_product(client, admin, sku, f"Chaos {i}", 500 + 100 * i)
        skus.append(sku)
    for sku in skus[1:]:
        await _restock_when_known(client, admin, sku, 100_000)
    await _restock_when_known(client, admin, skus[0], 5)  # the rare one
    users = []
    for i in range(max(4, math.ceil(rate * 60 / PER_SHOPPER_PER_MINUTE))):
        email = f"chaos-{tag}-{i}@example.com"
        token = await log_in(client, email, PASSWORD)
        me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        users.append(Shopper(email, token, str(me.json()["user_id"])))
    return Shop(admin, skus[1:], skus[0], users)


async def _restock_when_known(client: httpx.AsyncClient, admin: str, sku: str, n: int) -> None:
    deadline = time.monotonic() + 30
    while True:  # inventory hears of a new product by an event: a moment after it exists
        try:
            await restock(client, admin, sku, n)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def plan(shop: Shop, rng: random.Random, n: int) -> list[Placement]:
    placements = []
    for _ in range(n):
        user = rng.choice(shop.users)
        sku = shop.rare if rng.random() < 0.03 else rng.choice(shop.skus)
        placements.append(
            Placement(
                key=str(uuid.uuid4()),  # never the seed's: a rerun would get the first's orders
                user=user,
                lines=[{"sku": sku, "quantity": rng.randint(1, 2)}],
                token=rng.choice(TOKENS),
            )
        )
    return placements


async def place_all(
    client: httpx.AsyncClient,
    placements: list[Placement],
    rate: float,
    started: float,
    *,
    give_up_s: float = 180.0,
) -> None:
    """Each order at its time (`rate` a second), each retried until a definite answer."""

    async def one(i: int, p: Placement) -> None:
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        deadline = time.monotonic() + give_up_s
        backoff = 0.2
        while time.monotonic() < deadline:
            at = time.monotonic() - started
            try:
                r = await client.post(
                    "/orders",
                    json={"lines": p.lines, "payment_token": p.token},
                    headers={"Authorization": f"Bearer {p.user.token}", "Idempotency-Key": p.key},
                )
            except httpx.HTTPError as exc:
                p.attempts.append(Attempt(at, None, type(exc).__name__))
            else:
                p.attempts.append(Attempt(at, r.status_code))
                if r.status_code == 202:
                    p.order_ids.add(str(r.json()["order_id"]))
                    if p.accepted_at_s is None:
                        p.accepted_at_s = at
                    return
                if r.status_code == 401:  # the session is gone (Redis lost it): log in again
                    await relogin(client, p.user)
                elif r.status_code == 422 and "unknown" in r.text.lower():
                    pass  # orders has not heard of the product yet: again
                elif r.status_code not in RETRY_STATUSES:
                    return  # a definite refusal
            await asyncio.sleep(backoff)
            backoff = min(backoff * 1.5, 3.0)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(placements)))


async def relogin(client: httpx.AsyncClient, user: Shopper) -> None:
    """A new session for `user` (every placement of theirs uses it from now on)."""
    try:
        r = await client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    except httpx.HTTPError:
        return
    if r.status_code == 200:
        user.token = str(r.json()["access_token"])


async def ask_again(client: httpx.AsyncClient, placements: list[Placement]) -> None:
    """Every accepted order asked for once more with its key: the platform must name the same
    order (a second id for one key is a duplicate)."""
    for p in placements:
        if not p.accepted:
            continue
        try:
            r = await client.post(
                "/orders",
                json={"lines": p.lines, "payment_token": p.token},
                headers={"Authorization": f"Bearer {p.user.token}", "Idempotency-Key": p.key},
            )
        except httpx.HTTPError:
            continue
        if r.status_code in (200, 202):
            p.order_ids.add(str(r.json()["order_id"]))
