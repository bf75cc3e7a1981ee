"""The platform in containers (deploy/docker-compose.yml): its environment and its provisioning.

    eventshop compose-env --output var/compose/.env    the passwords, as compose variables
    eventshop provision                                 inside compose: broker users, DB roles

`compose-env` writes this installation's passwords (platform/secrets.py, the same ones
`eventshop up` uses) as the variables the compose file reads, to a file only its owner can
read. `provision` runs as a one-shot container once RabbitMQ and PostgreSQL are healthy: the
same users, rights, delivery limits and roles `eventshop up` makes on a host
(tooling/supervise.py, tooling/broker.py, tooling/dbroles.py), here over RabbitMQ's management
API, as nothing in the image runs rabbitmqctl.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from eventshop.platform.bus.topology import delivery_limit_policy
from eventshop.platform.secrets import secret
from eventshop.platform.settings import OPERATOR_USER, PlatformSettings
from eventshop.services import BACKENDS
from eventshop.tooling import dbroles
from eventshop.tooling.broker import EXCHANGE, VHOST, broker_rights, topic_rights

#: the services that get a broker user and a database role (the gateway too: a pool, an outbox)
SERVICES = [*BACKENDS, "gateway"]


def compose_env() -> dict[str, str]:
    """Every password the compose file reads, made once per installation."""
    env = {
        "EVENTSHOP_RABBITMQ_ADMIN_PASSWORD": secret("amqp-admin"),
        "EVENTSHOP_OPERATOR_AMQP_PASSWORD": secret("amqp-operator"),
        "EVENTSHOP_POSTGRES_PASSWORD": secret("pg-superuser"),
        "EVENTSHOP_INTERNAL_KEY": secret("internal-identity"),
        "EVENTSHOP_GATEWAY_JWT_SECRET": secret("gateway-jwt"),
    }
    for service in SERVICES:
        env[f"EVENTSHOP_{service.upper()}_AMQP_PASSWORD"] = secret(f"amqp-{service}")
        env[f"EVENTSHOP_{service.upper()}_DATABASE_PASSWORD"] = secret(f"pg-{service}")
    return env


def write_compose_env(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(compose_env().items())))


def provision_broker_over_http(
    api: str,
    admin: str,
    password: str,
    *,
    max_deliveries: int | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """The platform's vhost, one user per service with its rights and the delivery limit of its
    queue (a policy, ADR 0008), and the operator's user, through the management API
    (idempotent: PUT says what should be)."""
    done: list[str] = []
    vhost = quote(VHOST, safe="")
    limit = max_deliveries or PlatformSettings().max_deliveries
    with httpx.Client(
        base_url=api, auth=(admin, password), timeout=30, transport=transport
    ) as client:

        def put(path: str, body: dict[str, Any]) -> None:
            r = client.put(path, json=body)
            if r.status_code not in (201, 204):
                raise RuntimeError(f"PUT {path}: {r.status_code} {r.text[:200]}")

        put(f"/api/vhosts/{vhost}", {})
        accounts = {service: os.environ[f"EVENTSHOP_{service.upper()}_AMQP_PASSWORD"]
                    for service in SERVICES}  # fmt: skip
        for service, service_password in accounts.items():
            put(f"/api/users/{quote(service)}", {"password": service_password, "tags": ""})
            configure, write, read = broker_rights(service)
            put(
                f"/api/permissions/{vhost}/{quote(service)}",
                {"configure": configure, "write": write, "read": read},
            )
            put(
                f"/api/topic-permissions/{vhost}/{quote(service)}",
                {"exchange": EXCHANGE, "write": topic_rights(service), "read": ".*"},
            )
            policy = delivery_limit_policy(service, limit)
            put(
                f"/api/policies/{vhost}/{quote(policy.name, safe='')}",
                {
                    "pattern": policy.pattern,
                    "definition": policy.definition,
                    "priority": policy.priority,
                    "apply-to": policy.apply_to,
                },
            )
            done.append(service)
        put(
            f"/api/users/{quote(OPERATOR_USER)}",
            {
                "password": os.environ["EVENTSHOP_OPERATOR_AMQP_PASSWORD"],
                "tags": "impersonator,monitoring",
            },
        )
        put(
            f"/api/permissions/{vhost}/{quote(OPERATOR_USER)}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        done.append(OPERATOR_USER)
    return done


def provision() -> list[str]:
    """What the compose file's `provision` container runs (its environment says where)."""
    api = os.environ.get("EVENTSHOP_RABBITMQ_API", "http://rabbitmq:15672")
    admin = os.environ.get("RABBITMQ_ADMIN_USER", "eventshop-admin")
    users = provision_broker_over_http(api, admin, os.environ["RABBITMQ_ADMIN_PASSWORD"])
    superuser = os.environ["EVENTSHOP_DATABASE_URL"]
    roles = dbroles.provision_database(superuser, SERVICES)
    return [f"broker users: {', '.join(users)}", f"database: {', '.join(roles) or 'as it was'}"]
