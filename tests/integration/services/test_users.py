"""users' HTTP routes against the real PostgreSQL: a random schema per test, dropped after.

Nothing is faked. The bus node is built but never started: what the service publishes is
checked where the transactional outbox puts it, in the schema's `outbox` table. Argon2 runs
with the cheapest parameters so the module stays fast; the hashing itself is the real one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from eventshop.contracts import registry
from eventshop.platform.service import AnyContext
from eventshop.platform.settings import PlatformSettings
from eventshop.services.users.service import definition
from eventshop.services.users.settings import UsersSettings
from tests.support.services import http_client, service_context

pytestmark = pytest.mark.integration

SERVICE = "users"
MIGRATIONS = "eventshop.services.users.migrations"


def fast_settings(**overrides: object) -> UsersSettings:
    values: dict[str, object] = {
        "admin_emails": "boss@example.com, Ops@Example.com",
        "password_time_cost": 1,
        "password_memory_kib": 1_024,
        "password_parallelism": 1,
        **overrides,
    }
    return UsersSettings(**values)  # type: ignore[arg-type]


@dataclass
class Users:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    ctx: AnyContext
    schema: str


@pytest.fixture
async def context(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> AsyncIterator[AnyContext]:
    """The service as the runtime opens it, with the cheapest argon2 parameters."""
    schema, pool = schema_pool
    async with service_context(
        definition, schema, pool, settings, service_settings=fast_settings()
    ) as ctx:
        yield ctx


@pytest.fixture
def users(
    schema_pool: tuple[str, asyncpg.Pool], context: AnyContext, client: httpx.AsyncClient
) -> Users:
    return Users(client, context.pool, context, schema_pool[0])


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


async def register(users: Users, address: str, password: str = "correct horse") -> httpx.Response:
    return await users.client.post(
        "/users", json={"email": address, "password": password, "name": "Ada"}
    )


async def test_register_answers_the_account_and_emits_user_registered(users: Users) -> None:
    address = email()
    r = await users.client.post(
        "/users",
        json={"email": address, "password": "correct horse", "name": "  Ada Lovelace "},
        headers={"X-Correlation-ID": "cid-register-1"},
    )
    assert r.status_code == 201, r.text
    account = r.json()
    assert account["email"] == address
    assert account["name"] == "Ada Lovelace"
    assert account["role"] == "customer"
    assert uuid.UUID(account["user_id"])
    assert "password" not in r.text and "argon2" not in r.text
    assert r.headers["X-Correlation-ID"] == "cid-register-1"

    rows = await users.pool.fetch("SELECT * FROM outbox")
    assert len(rows) == 1
    row = rows[0]
    assert row["event_type"] == "user.registered"
    assert row["correlation_id"] == "cid-register-1"
    assert row["aggregate_id"] == account["user_id"]
    envelope, event = registry.decode(row["body"])
    assert envelope.correlation_id == "cid-register-1"
    assert event.model_dump() == {
        "user_id": account["user_id"], "email": address, "name": "Ada Lovelace",
    }  # fmt: skip
    assert b"correct horse" not in row["body"]


async def test_the_password_is_stored_only_as_an_argon2id_hash(users: Users) -> None:
    r = await register(users, email(), "correct horse")
    stored = await users.pool.fetchval(
        "SELECT password_hash FROM accounts WHERE user_id = $1", uuid.UUID(r.json()["user_id"])
    )
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


async def test_an_email_registers_once_whatever_its_case(users: Users) -> None:
    address = email()
    assert (await register(users, address)).status_code == 201
    r = await register(users, address.upper())
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"
    assert r.json()["correlation_id"] == r.headers["X-Correlation-ID"]
    assert await users.pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_simultaneous_registrations_of_one_email_make_one_account(users: Users) -> None:
    address = email()
    answers = await asyncio.gather(*(register(users, address) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    assert await users.pool.fetchval("SELECT count(*) FROM accounts") == 1
    assert await users.pool.fetchval("SELECT count(*) FROM outbox") == 1


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {"email": "a@example.com", "password": "long enough", "name": "A", "admin": True},
            "admin",
        ),
        ({"email": "a@example.com", "password": "short", "name": "A"}, "password"),
        ({"email": "not-an-email", "password": "long enough", "name": "A"}, "email"),
        ({"email": "a@example.com", "password": "long enough", "name": "   "}, "name"),
        ({"email": "a@example.com", "password": "long enough"}, "name"),
    ],
)
async def test_a_bad_body_is_refused_naming_the_field(
    users: Users, body: dict[str, object], field: str
) -> None:
    r = await users.client.post("/users", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    assert field in error["message"]
    assert "long enough" not in r.text and "short" not in r.text  # passwords are not echoed
    assert await users.pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_bootstrap_emails_register_as_admins(users: Users) -> None:
    r = await register(users, "ops@example.com")
    assert r.json()["role"] == "admin"
    r = await register(users, "Boss@Example.com")
    assert r.json()["role"] == "admin"


async def test_verify_password_answers_the_account_for_the_right_password(users: Users) -> None:
    address = email()
    account = (await register(users, address, "correct horse")).json()
    r = await users.client.post(
        "/sessions/verify-password", json={"email": address.upper(), "password": "correct horse"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == account


@pytest.mark.parametrize("who", ["wrong password", "unknown email"])
async def test_verify_password_says_no_alike_for_wrong_password_and_unknown_email(
    users: Users, who: str
) -> None:
    address = email()
    await register(users, address, "correct horse")
    body = (
        {"email": address, "password": "battery staple"}
        if who == "wrong password"
        else {"email": email(), "password": "correct horse"}
    )
    r = await users.client.post("/sessions/verify-password", json=body)
    assert r.status_code == 401
    assert r.json()["error"] == {
        "code": "invalid_credentials", "message": "invalid email or password", "details": [],
    }  # fmt: skip


async def test_a_hash_made_with_old_parameters_is_upgraded_at_login(users: Users) -> None:
    address = email()
    user_id = uuid.UUID((await register(users, address, "correct horse")).json()["user_id"])
    stronger = service_context(
        definition, users.schema, users.pool, users.ctx.platform,
        service_settings=fast_settings(password_time_cost=2),
    )  # fmt: skip
    async with stronger as ctx, http_client(ctx) as client:
        r = await client.post(
            "/sessions/verify-password", json={"email": address, "password": "correct horse"}
        )
    assert r.status_code == 200
    stored = await users.pool.fetchval(
        "SELECT password_hash FROM accounts WHERE user_id = $1", user_id
    )
    assert ",t=2," in stored


async def test_me_is_the_callers_account(users: Users) -> None:
    account = (await register(users, email())).json()
    r = await users.client.get(
        "/users/me", headers={"X-User-Id": account["user_id"], "X-User-Role": "customer"}
    )
    assert r.status_code == 200
    assert r.json() == account


@pytest.mark.parametrize(
    "headers, status",
    [({}, 401), ({"X-User-Id": str(uuid.uuid4())}, 404), ({"X-User-Id": "not-a-uuid"}, 404)],
)
async def test_me_needs_a_caller_with_an_account(
    users: Users, headers: dict[str, str], status: int
) -> None:
    r = await users.client.get("/users/me", headers=headers)
    assert r.status_code == status
    assert set(r.json()) == {"error", "correlation_id"}
