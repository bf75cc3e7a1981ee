"""One PostgreSQL role per service, owning its schema and nothing else.

    changed = provision_database("postgresql://root@127.0.0.1:5432/eventshop", SERVICES)
    url = database_url("orders")   # postgresql://eventshop_orders:<password>@127.0.0.1:5432/...

`eventshop up` runs this as the superuser before it starts the services, and gives each service
`database_url(service)` as its EVENTSHOP_DATABASE_URL. For every service it makes sure that:

- a LOGIN role `eventshop_<service>` exists, with no other attribute (not superuser, no
  CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, NOINHERIT), member of no role, and with this
  installation's password (`secret("pg-<service>")`);
- the service's schema exists and the role owns it and every table, view, sequence, function
  and type in it (earlier runs made them as root), so it can run its migrations at start;
- what the superuser makes in that schema later (the operator's `eventshop events rebuild`
  swaps in projection tables) the role may use at once, by default privileges, and owns after
  the next run;
- no other service's role and not PUBLIC has a right on that schema; PUBLIC cannot create in
  `public` (PostgreSQL 15's default, made sure of for older servers); and, as a post-condition
  checked after the changes, the role has USAGE on no schema but its own, `public` and the
  system catalogs.

LISTEN/NOTIFY and advisory locks need no grant. The role keeps CONNECT and TEMP on the database
(PUBLIC's defaults) and gets no CREATE on it: the runtime's `create_pool` looks its schema up
before it would create it (`GRANT_DATABASE_CREATE` grants it, for a runtime that did not).

Idempotent and cheap the second time: it reads the catalogs first and changes only what
differs; whether a role's password is current is checked against the SCRAM verifier PostgreSQL
stores (readable by the superuser), and a password is sent as a verifier, never in clear, so it
appears in no server log. Everything happens in one transaction under an advisory lock, so two
`up`s at once do not race and a failure leaves nothing half done.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from eventshop.platform.secrets import secret

ROLE_PREFIX = "eventshop_"
#: see the module's docstring: off, as `create_pool` runs no CREATE SCHEMA for an existing one
GRANT_DATABASE_CREATE = False
#: the advisory lock two provisioning runs take turns on
_LOCK_KEY = int.from_bytes(hashlib.sha1(b"eventshop:dbroles").digest()[:8], "big", signed=True)
_IDENT = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_IDENT = 63  # NAMEDATALEN - 1
_SCRAM_ITERATIONS = 4096
_SCRAM = re.compile(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")
#: schemas every role may use: the catalogs, and `public` (which PUBLIC cannot create in)
_SHARED_SCHEMAS = ("pg_catalog", "information_schema", "public")
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"


def quote_ident(name: str) -> str:
    """`name` double-quoted for SQL, if it is a plain lower-case identifier; refuses the rest.

    Only names this module makes go through here (roles, schemas): anything else is a mistake,
    and a name with a quote, a capital or a space is refused rather than escaped.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or len(name) > _MAX_IDENT:
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def role_name(service: str) -> str:
    role = f"{ROLE_PREFIX}{service}"
    quote_ident(role)  # refuses a service name that would not make one
    return role


def role_password(service: str) -> str:
    """The service's database password: from the environment, else this installation's own."""
    return os.environ.get(f"EVENTSHOP_{service.upper()}_DATABASE_PASSWORD") or secret(
        f"pg-{service}"
    )


def database_url(service: str, superuser_url: str | None = None) -> str:
    """The URL the service connects with: its role and password, on the superuser URL's host,
    port and database (by default the platform's, 127.0.0.1:5432/eventshop)."""
    if superuser_url is None:
        from eventshop.platform.settings import PlatformSettings

        superuser_url = PlatformSettings().database_url
    parts = urlsplit(superuser_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    user = quote(role_name(service), safe="")
    password = quote(role_password(service), safe="")
    netloc = f"{user}:{password}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scram_verifier(password: str, salt: bytes, iterations: int = _SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5803), as `\\password` makes it.

    The passwords here are ASCII (token_urlsafe), for which SASLprep changes nothing.
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def password_matches(stored: str | None, password: str, role: str) -> bool:
    """Whether PostgreSQL's stored secret for `role` (pg_authid.rolpassword) is `password`."""
    if stored is None:
        return False
    scram = _SCRAM.fullmatch(stored)
    if scram is not None:
        iterations, salt = int(scram.group(1)), base64.b64decode(scram.group(2))
        return hmac.compare_digest(scram_verifier(password, salt, iterations), stored)
    if stored.startswith("md5"):
        expected = "md5" + hashlib.md5((password + role).encode()).hexdigest()
        return hmac.compare_digest(expected, stored)
    return False


def provision_database(database_url_of_superuser: str, services: list[str]) -> list[str]:
    """Make sure every service has its role, owning its schema and nothing else (see the module
    docstring); returns what was changed, empty when nothing was. Runs its own event loop."""
    return asyncio.run(provision(database_url_of_superuser, services))


async def provision(database_url_of_superuser: str, services: list[str]) -> list[str]:
    """`provision_database`, for a caller already in an event loop."""
    roles = {service: role_name(service) for service in services}
    for service in services:
        quote_ident(service)
    conn = await asyncpg.connect(database_url_of_superuser)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            done: list[str] = []
            for service, role in roles.items():
                done += await _ensure_role(conn, role, role_password(service))
            if GRANT_DATABASE_CREATE:
                for role in roles.values():
                    done += await _ensure_database_create(conn, role)
            for service, role in roles.items():
                done += await _ensure_schema(conn, service, role)
            done += await _close_other_schemas(conn, roles)
            await _check_isolation(conn, roles)
    finally:
        await conn.close()
    return done


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str) -> list[str]:
    row = await conn.fetchrow(
        "SELECT oid, rolpassword, rolcanlogin AND NOT rolsuper AND NOT rolcreatedb"
        " AND NOT rolcreaterole AND NOT rolreplication AND NOT rolbypassrls AND NOT rolinherit"
        " AS least FROM pg_authid WHERE rolname = $1",
        role,
    )
    ident = quote_ident(role)
    if row is None:
        verifier = scram_verifier(password, os.urandom(16))
        await conn.execute(f"CREATE ROLE {ident} {_ROLE_ATTRIBUTES} PASSWORD '{verifier}'")
        return [f"role {role}"]
    done: list[str] = []
    if not row["least"]:
        await conn.execute(f"ALTER ROLE {ident} {_ROLE_ATTRIBUTES}")
        done.append(f"attributes of {role}")
    if not password_matches(row["rolpassword"], password, role):
        verifier = scram_verifier(password, os.urandom(16))
        await conn.execute(f"ALTER ROLE {ident} PASSWORD '{verifier}'")
        done.append(f"password {role}")
    # a role it is a member of could give it rights on other schemas
    for granted in await conn.fetch(
        "SELECT quote_ident(g.rolname) AS name, g.rolname FROM pg_auth_members m"
        " JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = $1",
        row["oid"],
    ):
        await conn.execute(f"REVOKE {granted['name']} FROM {ident}")
        done.append(f"{role} no longer a member of {granted['rolname']}")
    return done


async def _ensure_database_create(conn: asyncpg.Connection, role: str) -> list[str]:
    if await conn.fetchval(
        "SELECT has_database_privilege($1, current_database(), 'CONNECT')"
        " AND has_database_privilege($1, current_database(), 'CREATE')",
        role,
    ):
        return []
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {database} TO {quote_ident(role)}")
    return [f"{role} may connect and create its schema"]


async def _ensure_schema(conn: asyncpg.Connection, schema: str, role: str) -> list[str]:
    """The schema exists, belongs to the role, and so does everything in it."""
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema
    )
    qschema, qrole = quote_ident(schema), quote_ident(role)
    done: list[str] = []
    if owner is None:
        await conn.execute(f"CREATE SCHEMA {qschema} AUTHORIZATION {qrole}")
        done.append(f"schema {schema} for {role}")
    elif owner != role:
        await conn.execute(f"ALTER SCHEMA {qschema} OWNER TO {qrole}")
        done.append(f"schema {schema} now {role}'s")
    moved = 0
    # relations first: a table takes its serial and identity sequences (and its indexes) along,
    # and ALTER SEQUENCE would refuse them; then whatever sequences are left, routines, types
    for query in (
        _RELATIONS_NOT_OWNED,
        _SEQUENCES_NOT_OWNED,
        _ROUTINES_NOT_OWNED,
        _TYPES_NOT_OWNED,
    ):
        for row in await conn.fetch(query, schema, role):
            await conn.execute(f"ALTER {row['kind']} {row['name']} OWNER TO {qrole}")
            moved += 1
    if moved:
        done.append(f"{moved} objects in {schema} now {role}'s")
    done += await _ensure_default_privileges(conn, schema, role)
    return done


#: what the role must be granted on the tables and sequences the superuser makes in its schema
#: later (`eventshop events rebuild` swaps in projection tables made by the operator's tools)
_DEFAULT_PRIVILEGES = {
    "r": ("TABLES", {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}),
    "S": ("SEQUENCES", {"USAGE", "SELECT", "UPDATE"}),
}


async def _ensure_default_privileges(conn: asyncpg.Connection, schema: str, role: str) -> list[str]:
    """Tables and sequences the superuser makes in the schema after this run are the role's to
    use (the next run makes them its own)."""
    rows = await conn.fetch(
        "SELECT d.defaclobjtype::text AS kind, array_agg(a.privilege_type) AS privileges"
        " FROM pg_default_acl d, aclexplode(d.defaclacl) a"
        " WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND d.defaclnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)"
        " AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2)"
        " GROUP BY d.defaclobjtype",
        schema,
        role,
    )
    granted = {row["kind"]: set(row["privileges"]) for row in rows}
    done: list[str] = []
    for kind, (objects, wanted) in _DEFAULT_PRIVILEGES.items():
        if wanted <= granted.get(kind, set()):
            continue
        superuser = await conn.fetchval("SELECT quote_ident(current_user)")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {superuser} IN SCHEMA {quote_ident(schema)}"
            f" GRANT ALL ON {objects} TO {quote_ident(role)}"
        )
        done.append(f"{role} may use the {objects.lower()} {superuser} makes in {schema}")
    return done


# each yields (kind, name): `kind` from a fixed list, `name` quoted by PostgreSQL itself;
# an extension's objects stay the extension's
_RELATIONS_NOT_OWNED = """
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind,
       format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.oid
"""
_SEQUENCES_NOT_OWNED = """
SELECT 'SEQUENCE' AS kind, format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'S'
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.oid
"""
_ROUTINES_NOT_OWNED = """
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END
           AS kind,
       p.oid::regprocedure::text AS name
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
ORDER BY p.oid
"""
# enums, domains, ranges and stand-alone composite types (a table's row type, an array type
# and a range's multirange follow their owner)
_TYPES_NOT_OWNED = """
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind,
       format('%I.%I', n.nspname, t.typname) AS name
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = $1 AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
  AND (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
ORDER BY t.oid
"""
_NOT_OWNED = (_RELATIONS_NOT_OWNED, _SEQUENCES_NOT_OWNED, _ROUTINES_NOT_OWNED, _TYPES_NOT_OWNED)


async def _close_other_schemas(conn: asyncpg.Connection, roles: dict[str, str]) -> list[str]:
    """PUBLIC and the services' roles keep no right on a schema not their own: a service's
    schema is its role's alone, PUBLIC cannot create in `public`, and no other schema of the
    database is open to PUBLIC or to a service."""
    done: list[str] = []
    rows = await conn.fetch(
        "SELECT n.nspname, quote_ident(n.nspname) AS quoted,"
        " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee))"
        " END AS grantee, pg_get_userbyid(a.grantee) AS grantee_name,"
        " a.privilege_type"
        " FROM pg_namespace n, aclexplode(n.nspacl) a"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
        " AND a.grantee <> n.nspowner"
        " ORDER BY n.nspname, a.grantee, a.privilege_type"
    )
    ours = set(roles.values())
    revoke: dict[tuple[str, str], list[str]] = {}
    labels: dict[tuple[str, str], tuple[str, str]] = {}
    for row in rows:
        schema, grantee, who = row["nspname"], row["grantee"], row["grantee_name"]
        is_service = who in ours
        if schema == "public":
            unwanted = (grantee == "PUBLIC" and row["privilege_type"] == "CREATE") or is_service
        else:  # a service's schema, or any other: neither PUBLIC nor another service
            unwanted = grantee == "PUBLIC" or (is_service and roles.get(schema) != who)
        if unwanted:
            key = (row["quoted"], grantee)
            revoke.setdefault(key, []).append(row["privilege_type"])
            labels[key] = (schema, "PUBLIC" if grantee == "PUBLIC" else who)
    for (quoted, grantee), privileges in revoke.items():
        await conn.execute(f"REVOKE {', '.join(privileges)} ON SCHEMA {quoted} FROM {grantee}")
        schema, who = labels[(quoted, grantee)]
        done.append(f"{who}: no {'/'.join(privileges)} on schema {schema}")
    return done


async def _check_isolation(conn: asyncpg.Connection, roles: dict[str, str]) -> None:
    """The post-condition: each role can use no schema but its own and the shared ones."""
    leaks = await conn.fetch(
        "SELECT r.role, n.nspname FROM unnest($1::text[], $2::text[]) AS r(role, own),"
        " pg_namespace n"
        " WHERE n.nspname <> r.own AND n.nspname <> ALL($3::text[])"
        " AND n.nspname NOT LIKE 'pg\\_%'"
        " AND (has_schema_privilege(r.role, n.oid, 'USAGE')"
        "      OR has_schema_privilege(r.role, n.oid, 'CREATE'))",
        list(roles.values()),
        list(roles),
        list(_SHARED_SCHEMAS),
    )
    public_create = await conn.fetch(
        "SELECT r FROM unnest($1::text[]) AS r, pg_namespace n"
        " WHERE n.nspname = 'public' AND has_schema_privilege(r, n.oid, 'CREATE')",
        list(roles.values()),
    )
    if leaks or public_create:
        found = [f"{r['role']} on {r['nspname']}" for r in leaks]
        found += [f"{r['r']} may create in public" for r in public_create]
        raise RuntimeError(f"database roles still reach other schemas: {', '.join(found)}")
