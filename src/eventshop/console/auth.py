"""Who is at the console: the gateway's own login, its token in a cookie, checked with it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import httpx

#: the cookie that holds the gateway's access token
COOKIE = "eventshop_console"


@dataclass(frozen=True)
class Operator:
    user_id: str
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class LoginRefused(Exception):
    """The gateway refused the email and password (its message is kept)."""


class GatewayLogin:
    """Logs in through the gateway and asks it whose a token is, caching the answer briefly:
    a token the gateway ended (logout, expiry) is refused here within `check_s` seconds."""

    def __init__(self, client: httpx.AsyncClient, *, check_s: float) -> None:
        self.client = client
        self.check_s = check_s
        self._known: dict[str, tuple[float, Operator | None]] = {}
        #: the key of the forms' anti-forgery tokens: new at each start (sessions outlive it:
        #: a form rendered before a restart is refused, and shown again)
        self._form_key = secrets.token_bytes(32)

    async def login(self, email: str, password: str) -> str:
        answer = await self.client.post("/auth/login", json={"email": email, "password": password})
        if answer.status_code != 200:
            try:
                message = str(answer.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = f"the gateway answered {answer.status_code}"
            raise LoginRefused(message)
        return str(answer.json()["access_token"])

    async def logout(self, token: str) -> None:
        self._known.pop(_digest(token), None)
        await self.client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})

    async def who(self, token: str) -> Operator | None:
        """The account the token is a session of, or None (no such session)."""
        key = _digest(token)
        now = time.monotonic()
        cached = self._known.get(key)
        if cached is not None and now - cached[0] < self.check_s:
            return cached[1]
        answer = await self.client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        operator = None
        if answer.status_code == 200:
            me = answer.json()
            operator = Operator(str(me["user_id"]), str(me["email"]), str(me["role"]))
        elif answer.status_code != 401:
            answer.raise_for_status()  # the gateway away or failing: not "logged out"
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = (now, operator)
        return operator

    def form_token(self, token: str) -> str:
        """The anti-forgery token of a session's forms (an HMAC of its access token)."""
        return hmac.new(self._form_key, token.encode(), hashlib.sha256).hexdigest()

    def form_token_ok(self, token: str, given: str) -> bool:
        return hmac.compare_digest(self.form_token(token), given)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
