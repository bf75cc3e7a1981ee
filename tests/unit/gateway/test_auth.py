"""Tokens and sessions, with a fake session store: no Redis, milliseconds."""

from __future__ import annotations

import time

import jwt
import pytest

from eventshop.services.gateway.adapters.auth import (
    Authenticator,
    InvalidTokenError,
    KnownSession,
    SessionEndedError,
    Tokens,
    session_value,
)

SECRET = "unit-test-secret-of-at-least-32-characters"
NOW = 1_700_000_000.0


class FakeSessionStore:
    """Sessions in a dict, expiring by the same clock as the tokens."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sessions: dict[str, tuple[str, float]] = {}

    async def open(self, jti: str, holder: str, ttl_s: int) -> None:
        self.sessions[jti] = (holder, self.clock() + ttl_s)

    async def holder(self, jti: str) -> str | None:
        user_id, expires = self.sessions.get(jti, (None, 0.0))
        return user_id if expires > self.clock() else None

    async def end(self, jti: str) -> None:
        self.sessions.pop(jti, None)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> Tokens:
    return Tokens(SECRET, ttl_s=3_600, clock=clock)


def test_a_token_carries_who_and_until_when(tokens: Tokens) -> None:
    issued = tokens.issue(user_id="u1", email="a@example.com", role="customer")
    claims = jwt.decode(
        issued.access_token, SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["sub"] == "u1"
    assert claims["email"] == "a@example.com"
    assert claims["role"] == "customer"
    assert claims["jti"] == issued.principal.jti
    assert claims["exp"] == int(NOW) + 3_600
    assert issued.expires_in == 3_600
    assert tokens.verify(issued.access_token) == issued.principal


def test_every_token_has_its_own_id(tokens: Tokens) -> None:
    jtis = {
        tokens.issue(user_id="u1", email="a@x.io", role="customer").principal.jti for _ in range(5)
    }
    assert len(jtis) == 5


@pytest.mark.parametrize(
    "elapsed, valid", [(0, True), (3_599, True), (3_600, False), (9_999, False)]
)
def test_a_token_expires_after_its_ttl(
    tokens: Tokens, clock: FakeClock, elapsed: int, valid: bool
) -> None:
    token = tokens.issue(user_id="u1", email="a@x.io", role="customer").access_token
    clock.now = NOW + elapsed
    if valid:
        assert tokens.verify(token).user_id == "u1"
    else:
        with pytest.raises(InvalidTokenError, match="expired"):
            tokens.verify(token)


def test_a_token_verified_once_is_not_decoded_again_but_still_expires(
    tokens: Tokens, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway verifies the caller's token on every request: the second time it is looked
    up, not decoded (54 µs of PyJWT); its expiry is checked at every use all the same."""
    token = tokens.issue(user_id="u1", email="a@x.io", role="customer").access_token
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(jwt_text: str, *args: object, **kwargs: object) -> object:
        decoded.append(jwt_text)
        return real_decode(jwt_text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first = tokens.verify(token)
    assert [tokens.verify(token) for _ in range(3)] == [first] * 3
    assert decoded == [token]
    clock.now = NOW + 3_600
    with pytest.raises(InvalidTokenError, match="expired"):
        tokens.verify(token)


def test_only_tokens_that_verified_are_remembered_and_only_so_many(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eventshop.services.gateway.adapters.auth.VERIFIED_KEPT", 3)
    forged = _forged({"sub": "u1", "email": "a@x.io", "role": "admin", "jti": "j", "exp": 2**40},
                     key="not-the-secret-of-at-least-32-characters")  # fmt: skip
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            tokens.verify(forged)
    issued = [tokens.issue(user_id=f"u{i}", email="a@x.io", role="customer") for i in range(5)]
    for t in issued:
        assert tokens.verify(t.access_token) == t.principal
    assert list(tokens._verified) == [t.access_token for t in issued[-3:]]


def _forged(claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


GOOD = {"sub": "u1", "email": "a@x.io", "role": "admin", "jti": "j1", "exp": int(NOW) + 60}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(_forged(GOOD, key="another-secret-of-at-least-32-characters"), id="other key"),
        pytest.param(_forged(GOOD, key="", algorithm="none"), id="alg none"),
        pytest.param(_forged({k: v for k, v in GOOD.items() if k != "jti"}), id="no jti"),
        pytest.param(_forged({k: v for k, v in GOOD.items() if k != "exp"}), id="no exp"),
        pytest.param(_forged({**GOOD, "role": 7}), id="role not a string"),
        pytest.param(_forged({**GOOD, "exp": "soon"}), id="exp not a number"),
    ],
)
def test_what_we_did_not_sign_is_refused(tokens: Tokens, token: str) -> None:
    with pytest.raises(InvalidTokenError):
        tokens.verify(token)


def test_a_tampered_role_breaks_the_signature(tokens: Tokens) -> None:
    token = tokens.issue(user_id="u1", email="a@x.io", role="customer").access_token
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    forged_payload = _forged({**claims, "role": "admin"}, key="x" * 32).split(".")[1]
    with pytest.raises(InvalidTokenError):
        tokens.verify(f"{header}.{forged_payload}.{signature}")


async def test_login_opens_a_session_that_authenticates(tokens: Tokens, clock: FakeClock) -> None:
    sessions = FakeSessionStore(clock)
    auth = Authenticator(tokens, sessions)
    issued = await auth.login(user_id="u1", email="a@x.io", role="customer")
    # the session holds the user, role and email users gave: the server's word, not the token's
    holder = session_value("u1", "customer", "a@x.io")
    assert sessions.sessions[issued.principal.jti] == (holder, NOW + 3_600)
    assert (await auth.authenticate(issued.access_token)).user_id == "u1"


async def test_logout_revokes_that_token_only(tokens: Tokens, clock: FakeClock) -> None:
    auth = Authenticator(tokens, FakeSessionStore(clock))
    first = await auth.login(user_id="u1", email="a@x.io", role="customer")
    second = await auth.login(user_id="u1", email="a@x.io", role="customer")
    await auth.logout(await auth.authenticate(first.access_token))
    with pytest.raises(SessionEndedError):
        await auth.authenticate(first.access_token)
    assert (await auth.authenticate(second.access_token)).jti == second.principal.jti


async def test_a_valid_token_without_its_session_is_refused(
    tokens: Tokens, clock: FakeClock
) -> None:
    """E.g. Redis was flushed: the signature alone is not enough."""
    auth = Authenticator(tokens, FakeSessionStore(clock))
    token = tokens.issue(user_id="u1", email="a@x.io", role="customer").access_token
    with pytest.raises(SessionEndedError):
        await auth.authenticate(token)


async def test_a_session_of_another_user_does_not_count(tokens: Tokens, clock: FakeClock) -> None:
    sessions = FakeSessionStore(clock)
    auth = Authenticator(tokens, sessions)
    issued = tokens.issue(user_id="u1", email="a@x.io", role="customer")
    await sessions.open(issued.principal.jti, "someone-else", 60)
    with pytest.raises(SessionEndedError):
        await auth.authenticate(issued.access_token)


async def test_a_session_known_from_earlier_in_the_request_is_not_looked_up_again(
    tokens: Tokens, clock: FakeClock
) -> None:
    """The rate limit read the session in its own round trip: the store is not asked again
    (it is empty here, so asking it would refuse the token)."""
    auth = Authenticator(tokens, FakeSessionStore(clock))
    issued = tokens.issue(user_id="u1", email="a@x.io", role="customer")
    principal, token = issued.principal, issued.access_token
    known = KnownSession(token, principal, holder=session_value("u1", "customer", "a@x.io"))
    assert await auth.authenticate(token, known=known) == principal
    with pytest.raises(SessionEndedError):  # read as ended: ended
        await auth.authenticate(token, known=KnownSession(token, principal, holder=None))
    with pytest.raises(SessionEndedError):  # known of another token: this one is checked itself
        other = tokens.issue(user_id="u1", email="a@x.io", role="customer").access_token
        await auth.authenticate(other, known=known)


def test_the_real_clock_is_the_default() -> None:
    issued = Tokens(SECRET, ttl_s=60).issue(user_id="u1", email="a@x.io", role="customer")
    assert abs(issued.principal.expires_at - (time.time() + 60)) < 5


async def test_a_token_re_signed_with_another_role_is_refused(
    tokens: Tokens, clock: FakeClock
) -> None:
    """The session keeps the role users gave at login: a customer that re-signs its own token
    as admin (the key leaked, or was the development one) keeps the live session id and still
    gets no further."""
    auth = Authenticator(tokens, FakeSessionStore(clock))
    issued = await auth.login(user_id="u1", email="a@x.io", role="customer")
    claims = jwt.decode(
        issued.access_token, SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )
    forged = jwt.encode({**claims, "role": "admin"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidTokenError, match="its session"):
        await auth.authenticate(forged)
    assert (await auth.authenticate(issued.access_token)).role == "customer"


@pytest.mark.parametrize(
    "token, said",
    [
        ("not-a-jwt", "invalid token: not a token this platform issues"),
        (jwt.encode({"sub": "u1"}, "another-key-of-at-least-32-characters!", "HS256"),
         "invalid token: not signed by this platform"),
        (jwt.encode({"sub": "u1"}, SECRET, "HS256"), "invalid token: a claim is missing"),
    ],
    ids=["garbage", "another key", "claims missing"],
)  # fmt: skip
def test_a_refused_token_is_explained_in_the_platforms_words(
    tokens: Tokens, token: str, said: str
) -> None:
    with pytest.raises(InvalidTokenError) as refused:
        tokens.verify(token)
    assert str(refused.value) == said


def _re_signed(token: str, **claims: str) -> str:
    """The token with some claims changed and signed again with the key (which leaked, or was
    the development one): its session id (jti) is the live one."""
    original = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    return jwt.encode({**original, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "claims", [{"role": "admin"}, {"email": "victim@x.io"}, {"role": "admin", "email": "r@x.io"}]
)
async def test_a_re_signed_token_is_refused_on_the_fast_path_too(
    tokens: Tokens, clock: FakeClock, claims: dict[str, str]
) -> None:
    """The rate limit read the session along and hands it on (`KnownSession`): the identity
    is still the session's, not the token's."""
    sessions = FakeSessionStore(clock)
    auth = Authenticator(tokens, sessions)
    issued = await auth.login(user_id="u1", email="a@x.io", role="customer")
    forged = _re_signed(issued.access_token, **claims)
    holder = await sessions.holder(issued.principal.jti)
    known = KnownSession(forged, tokens.verify(forged), holder)
    with pytest.raises(InvalidTokenError, match="session"):
        await auth.authenticate(forged, known=known)
    with pytest.raises(InvalidTokenError, match="session"):
        await auth.authenticate(forged)


async def test_who_the_caller_is_comes_from_the_session(tokens: Tokens, clock: FakeClock) -> None:
    sessions = FakeSessionStore(clock)
    auth = Authenticator(tokens, sessions)
    issued = await auth.login(user_id="u1", email="a@x.io", role="customer")
    assert await sessions.holder(issued.principal.jti) == session_value("u1", "customer", "a@x.io")
    who = await auth.authenticate(issued.access_token)
    assert (who.user_id, who.role, who.email) == ("u1", "customer", "a@x.io")


@pytest.mark.parametrize(
    "holder", ["u1", "u1 customer", "{}", "[]", '{"sub": "u1", "role": "customer"}', "{"]
)
async def test_a_session_not_holding_a_whole_identity_has_ended(
    tokens: Tokens, clock: FakeClock, holder: str
) -> None:
    """Sessions written before they kept the whole identity (or anything else): log in again."""
    sessions = FakeSessionStore(clock)
    auth = Authenticator(tokens, sessions)
    issued = tokens.issue(user_id="u1", email="a@x.io", role="customer")
    await sessions.open(issued.principal.jti, holder, 60)
    with pytest.raises(SessionEndedError):
        await auth.authenticate(issued.access_token)
