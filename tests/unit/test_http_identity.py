"""A service believes identity headers only with the gateway's proof: an HMAC over them, the
request line and the time, under the installation's key (eventshop.platform.http)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from eventshop.platform.http import (
    PROOF_HEADER,
    Caller,
    identity_proven,
    install_conventions,
    sign_identity,
)

KEY = b"the-installation-key"
WHO = {"user_id": "u-1", "role": "customer", "email": "ada@example.com"}


def proof(**overrides: object) -> str:
    args: dict[str, object] = {"method": "GET", "path": "/mine", **WHO, "now": 1_000.0}
    args.update(overrides)
    key = args.pop("key", KEY)
    return sign_identity(key, **args)  # type: ignore[arg-type]


def proven(value: str, **overrides: object) -> bool:
    args: dict[str, object] = {"method": "GET", "path": "/mine", **WHO, "now": 1_010.0}
    args.update(overrides)
    return identity_proven(KEY, value, **args)  # type: ignore[arg-type]


def test_the_gateways_proof_is_accepted() -> None:
    assert proven(proof())


@pytest.mark.parametrize(
    "change",
    [
        {"role": "admin"},
        {"user_id": "u-2"},
        {"email": "eve@example.com"},
        {"path": "/other"},
        {"method": "DELETE"},
        {"now": 1_000.0 + 31},
        {"now": 1_000.0 - 31},
    ],
    ids=["another role", "another user", "another email", "another path", "another method",
         "too old", "from the future"],
)  # fmt: skip
def test_a_proof_for_anything_else_is_refused(change: dict[str, object]) -> None:
    assert not proven(proof(), **change)


@pytest.mark.parametrize("value", ["", "garbage", "1000.", ".abc", "abc.def"])
def test_a_malformed_proof_is_refused(value: str) -> None:
    assert not proven(value)


def test_a_proof_under_another_key_is_refused() -> None:
    assert not proven(proof(key=b"another-installation"))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.identity_key = KEY
    install_conventions(app)

    @app.get("/mine")
    async def mine(who: Caller) -> dict[str, str]:
        return {"user_id": who.user_id, "role": who.role}

    @app.get("/things/{name}")
    async def thing(name: str, who: Caller) -> dict[str, str]:
        return {"name": name, "user_id": who.user_id}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://svc"
    ) as c:
        yield c


HEADERS = {"X-User-Id": "u-1", "X-User-Role": "admin", "X-User-Email": "ada@example.com"}


async def test_identity_headers_alone_are_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/mine", headers=HEADERS)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "identity_proof_refused"


async def test_identity_headers_with_their_proof_are_believed(client: httpx.AsyncClient) -> None:
    signed = sign_identity(
        KEY, method="GET", path="/mine", user_id="u-1", role="admin", email="ada@example.com"
    )
    r = await client.get("/mine", headers={**HEADERS, PROOF_HEADER: signed})
    assert r.status_code == 200
    assert r.json() == {"user_id": "u-1", "role": "admin"}


async def test_a_proof_signs_the_path_as_sent_escapes_and_all(client: httpx.AsyncClient) -> None:
    """The gateway quotes a path parameter and signs that path; the service checks the path as
    it came (raw), not as decoded, or a parameter with an escaped character is refused (the API
    fuzzer found it: a sku with a space)."""
    path = "/things/a%20b"
    signed = sign_identity(
        KEY, method="GET", path=path, user_id="u-1", role="admin", email="ada@example.com"
    )
    r = await client.get(path, headers={**HEADERS, PROOF_HEADER: signed})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "a b", "user_id": "u-1"}
