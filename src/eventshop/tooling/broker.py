"""The platform's RabbitMQ users, as `eventshop up` provisions them on a host (rabbitmqctl, as
root): one user per service with a password of this installation, allowed to write only to the
events exchange (its own event types, by topic permission) and its own direct exchange, and to
read only its own queues; the operator's user; guest left without rights on the vhost
(docs/SECURITY.md); and on each service's queue the delivery limit that parks a message its
consumer never settles (a policy, ADR 0008). tooling/compose.py makes the same through RabbitMQ's
management API.

With EVENTSHOP_BROKER=cluster all of it is made on the three-node cluster of tooling/cluster.py
(rabbitmqctl -n <a running node>, with the cluster's cookie), every service's URL names the
three nodes, and the retry ladder's delay queues (classic queues: they live on one node) are
mirrored to every node by a policy, so a node's death leaves no service without them (ADR 0013).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

from eventshop.contracts import PRODUCERS
from eventshop.platform.bus.provenance import REPLAYER
from eventshop.platform.bus.topology import REPLAY_EXCHANGE, delivery_limit_policy
from eventshop.platform.secrets import keep_secret, read_secret, secret
from eventshop.platform.settings import OPERATOR_USER, PlatformSettings
from eventshop.tooling import cluster

VHOST = "eventshop"
EXCHANGE = "eventshop.events"


def service_password(service: str) -> str:
    """The service's broker password: from the environment, else this installation's own."""
    return os.environ.get(f"EVENTSHOP_{service.upper()}_AMQP_PASSWORD") or secret(f"amqp-{service}")


def amqp_url(service: str) -> str:
    if cluster.selected():
        return cluster.amqp_urls(service, service_password(service), VHOST)
    return f"amqp://{service}:{service_password(service)}@127.0.0.1:5672/{VHOST}"


def operator_amqp_url() -> str | None:
    """The operator's URL on the cluster (None on the machine's broker: the default then)."""
    password = read_secret("amqp-operator")
    if not cluster.selected() or password is None:
        return None
    return cluster.amqp_urls(OPERATOR_USER, password, VHOST)


def _ctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """rabbitmqctl on the machine's broker, or on a running node of the cluster; `stdin` is
    what the command reads from its standard input (a password: never on a command line,
    where every user of the machine could read it, and where one beginning with "-" would be
    taken for an option)."""
    if cluster.selected():
        root = Path(os.environ.get("EVENTSHOP_HOME") or Path.cwd())
        return cluster.ctl(root, cluster.live_node(root), *args, stdin=stdin)
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def _rabbitmqctl(*args: str, check: bool = True, stdin: str | None = None) -> str:
    out = _ctl(*args, stdin=stdin)
    if check and out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _rows(out: str) -> list[tuple[str, ...]]:
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def _either(*names: str) -> str:
    """A regex alternation matching exactly these names."""
    return "|".join(re.escape(n) for n in names)


def broker_rights(service: str) -> tuple[str, str, str]:
    """(configure, write, read) for a service's user: its own queues and direct exchange, the
    events exchange (where the topic permission limits it to its own event types) and the replay
    exchange its queue is bound to. Never the default exchange (`amq.default`): through it a
    service could drop any event into any queue. Only the archive writes to the replay exchange.
    """
    own = rf"{re.escape(service)}(\..*)?"
    configure = rf"^({_either(EXCHANGE, REPLAY_EXCHANGE)}|{own})$"
    writable = (EXCHANGE, REPLAY_EXCHANGE) if service == REPLAYER else (EXCHANGE,)
    write = rf"^({_either(*writable)}|{own})$"
    return configure, write, configure


def topic_rights(service: str) -> str:
    """The routing keys (event types) the service may publish to the events exchange."""
    types = sorted(t for t, producer in PRODUCERS.items() if producer == service)
    # RabbitMQ matches the routing key against the write pattern: nothing else is allowed
    return f"^({_either(*types)})$" if types else "^$"


def _ensure_user(name: str, password: str, users: set[str], done: list[str]) -> None:
    if name not in users:
        _rabbitmqctl("add_user", name, stdin=password)
        done.append(f"user {name}")
        return
    if _ctl("authenticate_user", name, stdin=password).returncode:
        _rabbitmqctl("change_password", name, stdin=password)
        done.append(f"password {name}")


def provision_broker(services: list[str]) -> list[str]:
    """One RabbitMQ user per service, with a password of this installation; the operator's user;
    and guest left without rights on the platform's vhost.

    A service's user may write only to the events exchange (its own event types, by topic
    permission), to its own direct exchange, and read only its own queues (`broker_rights`).
    Reads what exists first and changes only what differs (each rabbitmqctl call costs ~1 s);
    whether a password is current is remembered as a digest beside the secrets, so a second
    `up` asks the broker nothing it need not.
    """
    done: list[str] = []
    users = {r[0] for r in _rows(_rabbitmqctl("list_users"))}
    perms = {r[0]: r[1:4] for r in _rows(_rabbitmqctl("list_permissions", "-p", VHOST))}
    topic = {
        (r[0], r[1]): r[2:4] for r in _rows(_rabbitmqctl("list_topic_permissions", "-p", VHOST))
    }
    accounts = {service: service_password(service) for service in services}
    accounts[OPERATOR_USER] = secret("amqp-operator")
    digest = hashlib.sha256(repr(sorted(accounts.items())).encode()).hexdigest()
    remembered = "amqp-provisioned-cluster" if cluster.selected() else "amqp-provisioned"
    known = read_secret(remembered) == digest and set(accounts) <= users
    for name, password in accounts.items():
        if not known or name not in users:
            _ensure_user(name, password, users, done)
    if not known:
        _rabbitmqctl("set_user_tags", OPERATOR_USER, "impersonator", "monitoring")
    if perms.get(OPERATOR_USER) != (".*", ".*", ".*"):
        _rabbitmqctl("set_permissions", "-p", VHOST, OPERATOR_USER, ".*", ".*", ".*")
        done.append(f"permissions {OPERATOR_USER}")
    if "guest" in perms:
        _rabbitmqctl("clear_permissions", "-p", VHOST, "guest")
        done.append("guest: no rights on the platform's vhost")
    for service in services:
        wanted = broker_rights(service)
        if perms.get(service) != wanted:
            _rabbitmqctl("set_permissions", "-p", VHOST, service, *wanted)
            done.append(f"permissions {service}")
        write = topic_rights(service)
        if topic.get((service, EXCHANGE)) != (write, ".*"):
            _rabbitmqctl("set_topic_permissions", "-p", VHOST, service, EXCHANGE, write, ".*")
            done.append(f"topic permissions {service}")
    keep_secret(remembered, digest)
    done += apply_delivery_limits(services)
    if cluster.selected():
        done += mirror_delay_queues()
    done += _drop_legacy_delay_queues(services)
    return done


def apply_delivery_limits(
    services: list[str], *, vhost: str = VHOST, max_deliveries: int | None = None
) -> list[str]:
    """Each service's queue gets the policy that parks a message after `max_deliveries`
    deliveries (EVENTSHOP_MAX_DELIVERIES; topology.delivery_limit_policy). A policy, set here as
    the administrator, reaches queues declared before it without a redeclaration (a quorum
    queue's arguments cannot change) and asks nothing more of the services' users. Only a policy
    that differs is set again; a service without a queue has one that matches nothing yet."""
    limit = max_deliveries or PlatformSettings().max_deliveries
    rows = _rows(_rabbitmqctl("list_policies", "-p", vhost))
    current = {r[1]: r[2:6] for r in rows if len(r) >= 6}
    done = []
    for service in services:
        policy = delivery_limit_policy(service, limit)
        have = current.get(policy.name)
        if have is not None and (have[0], have[1], _json(have[2]), have[3]) == (
            policy.pattern,
            policy.apply_to,
            policy.definition,
            str(policy.priority),
        ):
            continue
        _rabbitmqctl(
            "set_policy", "-p", vhost, "--apply-to", policy.apply_to,
            "--priority", str(policy.priority),
            policy.name, policy.pattern, json.dumps(policy.definition),
        )  # fmt: skip
        done.append(f"delivery limit {service} ({limit})")
    return done


#: the retry ladder's delay queues on every node of a cluster (topology.py declares them classic:
#: a quorum queue's arguments, hence its type, cannot change on an installation that has them)
MIRROR_POLICY = "eventshop-cluster-delay-queues"
MIRROR_PATTERN = r"^[a-z][a-z0-9_]*\.delay\.[0-9]+ms$"
MIRROR_DEFINITION = {"ha-mode": "all", "ha-sync-mode": "automatic"}


def mirror_delay_queues(vhost: str = VHOST) -> list[str]:
    """Mirror every delay queue to all nodes: a classic queue lives on the node it was declared
    on, and with that node down a consumer could neither re-declare it nor retry into it."""
    rows = _rows(_rabbitmqctl("list_policies", "-p", vhost))
    have = next((r for r in rows if len(r) >= 6 and r[1] == MIRROR_POLICY), None)
    if have is not None and (have[2], _json(have[4])) == (MIRROR_PATTERN, MIRROR_DEFINITION):
        return []
    _rabbitmqctl(
        "set_policy", "-p", vhost, "--apply-to", "queues", "--priority", "0",
        MIRROR_POLICY, MIRROR_PATTERN, json.dumps(MIRROR_DEFINITION),
    )  # fmt: skip
    return ["delay queues mirrored to every node"]


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _drop_legacy_delay_queues(services: list[str]) -> list[str]:
    """Delete the retry ladder's queues of before the direct exchanges (`<service>.retry.*`)
    once they are empty: they dead-letter through the default exchange, which services may no
    longer use; the broker still empties them into their service's queue by itself."""
    names = [r[0] for r in _rows(_rabbitmqctl("list_queues", "-p", VHOST, "name"))]
    dropped = []
    for name in names:
        service, _, rest = name.partition(".retry.")
        deletable = rest and service in services
        if deletable and _ctl("delete_queue", "-p", VHOST, name, "--if-empty").returncode == 0:
            dropped.append(f"dropped {name}")
    return dropped
