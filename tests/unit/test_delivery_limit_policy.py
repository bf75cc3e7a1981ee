"""The delivery limit (ADR 0008) without a broker: the policy, the reason a parked message shows,
and both provisioning paths (rabbitmqctl and the management API) asked for it. No I/O: the
management API is an httpx MockTransport, rabbitmqctl a recorder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from eventshop.platform.bus.parking import ParkedMessage, delivery_limit_death
from eventshop.platform.bus.topology import delivery_limit_policy
from eventshop.tooling import broker, compose

DEATH = {
    "count": 1,
    "reason": "delivery_limit",
    "queue": "inventory",
    "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "exchange": "",
    "routing-keys": ["inventory"],
}
EXPIRED = {**DEATH, "reason": "expired", "queue": "inventory.delay.1000ms"}


def test_the_policy_parks_in_the_services_own_parking_lot_after_n_deliveries() -> None:
    policy = delivery_limit_policy("inventory", 10)
    assert (policy.name, policy.pattern, policy.apply_to) == (
        "eventshop-delivery-limit-inventory",
        "^inventory$",
        "queues",
    )
    assert policy.definition == {
        "delivery-limit": 9,  # returns allowed: 10 deliveries
        "dead-letter-exchange": "inventory.direct",
        "dead-letter-routing-key": "inventory.parked",
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }
    with pytest.raises(ValueError):
        delivery_limit_policy("inventory", 1)


def _parked(headers: dict[str, Any]) -> ParkedMessage:
    msg = SimpleNamespace(
        message_id="e1", type="order.created", correlation_id="c1", headers=headers, body=b"{}"
    )
    return ParkedMessage.of(msg, max_deliveries=10)  # type: ignore[arg-type]


def test_a_message_the_broker_parked_says_so() -> None:
    p = _parked({"schema_version": 1, "x-death": [DEATH], "x-first-death-reason": "delivery_limit"})
    assert p.error == "delivery limit reached (10 deliveries)"
    assert (p.deliveries, p.attempts) == (10, 10)
    assert p.parked_at == "2026-01-02T03:04:05+00:00"


def test_after_the_ladder_the_handlers_error_follows_the_reason() -> None:
    p = _parked({"x-death": [DEATH, EXPIRED], "x-error": "RuntimeError: boom", "x-attempt": 1})
    assert p.error == "delivery limit reached (10 deliveries); before it, RuntimeError: boom"
    assert p.attempts == 11


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-death": [EXPIRED], "x-error": "RuntimeError: boom", "x-parked-at": "2026-01-02"},
        # parked by the broker once, replayed by an old version, then parked by the consumer
        {"x-death": [DEATH], "x-error": "ContractError: x", "x-parked-at": "2026-01-02"},
    ],
    ids=["nothing", "the ladder", "the consumer after the broker"],
)
def test_a_message_the_consumer_parked_is_read_as_before(headers: dict[str, Any]) -> None:
    assert delivery_limit_death(headers) is None
    p = _parked(headers)
    assert p.deliveries is None
    assert p.error == headers.get("x-error", "")


def test_the_management_api_path_puts_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    puts: dict[str, Any] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        puts[request.url.raw_path.decode()] = json.loads(request.content)
        return httpx.Response(204)

    for service in compose.SERVICES:
        monkeypatch.setenv(f"EVENTSHOP_{service.upper()}_AMQP_PASSWORD", "pw")
    monkeypatch.setenv("EVENTSHOP_OPERATOR_AMQP_PASSWORD", "pw")
    compose.provision_broker_over_http(
        "http://rabbitmq:15672", "admin", "pw", max_deliveries=7,
        transport=httpx.MockTransport(answer),
    )  # fmt: skip
    assert puts["/api/policies/eventshop/eventshop-delivery-limit-inventory"] == {
        "pattern": "^inventory$",
        "definition": delivery_limit_policy("inventory", 7).definition,
        "priority": 10,
        "apply-to": "queues",
    }
    assert all(
        f"/api/policies/eventshop/eventshop-delivery-limit-{s}" in puts for s in compose.SERVICES
    )


def test_the_rabbitmqctl_path_sets_only_what_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    current = delivery_limit_policy("orders", 10)
    listing = (
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"
        f"eventshop\t{current.name}\t{current.pattern}\tqueues\t"
        f"{json.dumps(current.definition)}\t10\n"
    )

    def rabbitmqctl(*args: str, check: bool = True) -> str:
        calls.append(args)
        return listing if args[0] == "list_policies" else ""

    monkeypatch.setattr(broker, "_rabbitmqctl", rabbitmqctl)
    done = broker.apply_delivery_limits(["orders", "payments"], max_deliveries=10)
    assert done == ["delivery limit payments (10)"]
    [set_policy] = [c for c in calls if c[0] == "set_policy"]
    assert set_policy[:7] == (
        "set_policy", "-p", "eventshop", "--apply-to", "queues", "--priority", "10",
    )  # fmt: skip
    assert set_policy[7:9] == ("eventshop-delivery-limit-payments", "^payments$")
    assert json.loads(set_policy[9]) == delivery_limit_policy("payments", 10).definition


def test_provisioning_a_host_applies_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    monkeypatch.setattr(broker, "_rabbitmqctl", lambda *a, **k: "")
    monkeypatch.setattr(broker, "service_password", lambda s: "pw")
    monkeypatch.setattr(broker, "secret", lambda name: "pw")
    monkeypatch.setattr(broker, "read_secret", lambda name: None)
    monkeypatch.setattr(broker, "keep_secret", lambda name, value: None)
    monkeypatch.setattr(broker, "_ensure_user", lambda *a: None)
    monkeypatch.setattr(broker, "_drop_legacy_delay_queues", lambda services: [])

    def apply(services: list[str]) -> list[str]:
        asked.append(services)
        return []

    monkeypatch.setattr(broker, "apply_delivery_limits", apply)
    broker.provision_broker(["inventory", "orders"])
    assert asked == [["inventory", "orders"]]
