"""Who is calling: JWTs (HS256) backed by a session in Redis.

A JWT alone cannot be taken back before it expires. So login also opens a session,
`session:<jti>` in Redis, living exactly as long as the token, holding who the caller is as
users answered at login (user id, role AND email, a small JSON object); every authenticated
request checks the signature, the expiry AND that the session still exists; logout deletes it,
and the same token is refused from then on. Who the caller is comes from the server, never from
the token's claims: a token re-signed with another role (or email, or user) than its session's
is refused and logged, whoever holds the signing key.

`Tokens` is the pure part (sign, verify); `Authenticator` adds the sessions, behind the
`SessionStore` port so its logic is unit-tested with a fake and run against Redis.

The rate limit, which runs first, already verifies the token (to count per user) and reads its
session in its own round trip to Redis; it hands both on as a `KnownSession`, and authenticating
the request then costs neither a second verification nor a second round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import jwt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ("sub", "email", "role", "jti", "exp")


_TOKEN_REFUSALS: dict[type[Exception], str] = {
    jwt.DecodeError: "invalid token: not a token this platform issues",
    jwt.InvalidSignatureError: "invalid token: not signed by this platform",
    jwt.InvalidAlgorithmError: "invalid token: not signed by this platform",
    jwt.MissingRequiredClaimError: "invalid token: a claim is missing",
    jwt.ImmatureSignatureError: "invalid token: not valid yet",
}


class InvalidTokenError(Exception):
    """The token is malformed, not signed by us, or expired."""


class SessionEndedError(Exception):
    """The token is genuine but its session is gone: logged out (or the store was flushed)."""


class SessionStoreUnavailableError(Exception):
    """Redis cannot be reached: nobody can be authenticated until it is back."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as its token says."""

    user_id: str
    email: str
    role: str
    jti: str
    #: Unix time the token (and its session) expires
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    #: seconds from now
    expires_in: int
    principal: Principal


#: how many verified tokens `Tokens` remembers (a few MB at most)
VERIFIED_KEPT = 10_000


class Tokens:
    """Signs and verifies access tokens. Pure: no I/O; the clock is injectable for tests.

    A token verified once is remembered by its text (the last `VERIFIED_KEPT`, the oldest
    forgotten first): its signature and its claims cannot change, so the next request with it
    is looked up instead of decoded again (PyJWT's decode and HMAC check: 54 µs, on every
    request to the gateway). Its expiry is checked at every use all the same, and its session
    by the caller (`Authenticator`), so a logout still ends it at once. Only tokens that
    verified are kept: refused ones cannot fill it.
    """

    def __init__(self, secret: str, ttl_s: int, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock
        self._verified: dict[str, Principal] = {}

    def issue(self, *, user_id: str, email: str, role: str) -> IssuedToken:
        now = int(self._clock())
        principal = Principal(
            user_id=user_id, email=email, role=role, jti=str(uuid.uuid4()),
            expires_at=now + self.ttl_s,
        )  # fmt: skip
        claims = {
            "sub": principal.user_id,
            "email": principal.email,
            "role": principal.role,
            "jti": principal.jti,
            "iat": now,
            "exp": principal.expires_at,
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(access_token=token, expires_in=self.ttl_s, principal=principal)

    def verify(self, token: str) -> Principal:
        """The principal of a token we signed that has not expired; InvalidTokenError if not."""
        principal = self._verified.get(token)
        if principal is None:
            principal = self._decode(token)
            if len(self._verified) >= VERIFIED_KEPT:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = principal
        if principal.expires_at <= self._clock():
            raise InvalidTokenError("token expired")
        return principal

    def _decode(self, token: str) -> Principal:
        """The principal a token we signed names, expired or not; InvalidTokenError if none."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # never what the token's header asks for (e.g. "none")
                # expiry is checked below against the injectable clock
                options={"require": list(_REQUIRED_CLAIMS), "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            # the client is told in the platform's words; the library's own goes to the log
            log.info("auth.token_refused", reason=type(exc).__name__, detail=str(exc))
            raise InvalidTokenError(_TOKEN_REFUSALS.get(type(exc), "invalid token")) from None
        if not all(
            isinstance(claims[c], str) and claims[c] for c in ("sub", "email", "role", "jti")
        ):
            raise InvalidTokenError("invalid token: malformed claims")
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidTokenError("invalid token: malformed expiry")
        return Principal(
            user_id=claims["sub"], email=claims["email"], role=claims["role"],
            jti=claims["jti"], expires_at=exp,
        )  # fmt: skip


def session_value(user_id: str, role: str, email: str) -> str:
    """What a session holds: who the server said the caller is at login."""
    return json.dumps({"sub": user_id, "role": role, "email": email}, separators=(",", ":"))


def session_identity(holder: str) -> tuple[str, str, str] | None:
    """(user id, role, email) of what a session holds; None if it is not a session's value
    (one written before sessions kept the whole identity: its token must log in again)."""
    try:
        value = json.loads(holder)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    identity = (value.get("sub"), value.get("role"), value.get("email"))
    if not all(isinstance(part, str) and part for part in identity):
        return None
    return cast(tuple[str, str, str], identity)


@dataclass(frozen=True)
class KnownSession:
    """A token verified, and its session's holder read, earlier in the same request."""

    token: str
    principal: Principal
    #: what the session holds (`session_value`); None if it has ended
    holder: str | None


class SessionStore(Protocol):
    """Where sessions live: one entry per token id, owned by a user, expiring by itself."""

    async def open(self, jti: str, holder: str, ttl_s: int) -> None: ...

    async def holder(self, jti: str) -> str | None:
        """What a live session holds (`session_value`); None if it ended or expired."""
        ...

    async def end(self, jti: str) -> None: ...


class RedisSessionStore:
    """Sessions as Redis keys `<prefix>session:<jti>` = `session_value(...)` (JSON), with the
    token's TTL."""

    def __init__(self, redis: Redis, *, prefix: str = "") -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, jti: str) -> str:
        return f"{self._prefix}session:{jti}"

    async def open(self, jti: str, holder: str, ttl_s: int) -> None:
        with _store_errors():
            await self._redis.set(self.key(jti), holder, ex=ttl_s)

    async def holder(self, jti: str) -> str | None:
        with _store_errors():
            value = await self._redis.get(self.key(jti))
        return value.decode() if isinstance(value, bytes) else value

    async def end(self, jti: str) -> None:
        with _store_errors():
            await self._redis.delete(self.key(jti))


@contextmanager
def _store_errors() -> Iterator[None]:
    """Redis failing is logged with its cause and surfaces as one error the API maps (503)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        log.warning("sessions.unavailable", error=repr(exc))
        raise SessionStoreUnavailableError("the session store is unavailable") from exc


class Authenticator:
    def __init__(self, tokens: Tokens, sessions: SessionStore) -> None:
        self.tokens = tokens
        self.sessions = sessions

    async def login(self, *, user_id: str, email: str, role: str) -> IssuedToken:
        """A token for an account whose password was just verified, and its session."""
        issued = self.tokens.issue(user_id=user_id, email=email, role=role)
        await self.sessions.open(
            issued.principal.jti, session_value(user_id, role, email), issued.expires_in
        )
        return issued

    async def authenticate(self, token: str, *, known: KnownSession | None = None) -> Principal:
        """The caller a token names, if it is valid and its session open; `known` is what was
        already checked of the same token in this request (then nothing is checked twice).

        Who the caller is (user, role, email) is the session's, written at login; a token
        claiming otherwise was not issued with that session: it is refused, and logged."""
        if known is not None and known.token == token:
            claimed, holder = known.principal, known.holder
        else:
            claimed = self.tokens.verify(token)
            holder = await self.sessions.holder(claimed.jti)
        identity = session_identity(holder) if holder is not None else None
        if identity is None:
            raise SessionEndedError("session ended: log in again")
        user_id, role, email = identity
        if (claimed.user_id, claimed.role, claimed.email) != identity:
            # the live session of a token re-signed by whoever holds the key
            log.warning(
                "auth.claims_not_the_sessions",
                jti=claimed.jti,
                session_user_id=user_id,
                claimed_user_id=claimed.user_id,
                session_role=role,
                claimed_role=claimed.role,
                email_differs=claimed.email != email,
            )
            if claimed.user_id != user_id:
                raise SessionEndedError("session ended: log in again")
            raise InvalidTokenError("the token does not match its session: log in again")
        return Principal(
            user_id=user_id, email=email, role=role, jti=claimed.jti,
            expires_at=claimed.expires_at,
        )  # fmt: skip

    async def logout(self, principal: Principal) -> None:
        await self.sessions.end(principal.jti)
