"""deploy/docker-compose.yml runs every service of the registry, from the one image, each told
which it is, and publishes nothing but the gateway, RabbitMQ's UI, Prometheus and the mailbox
view, on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eventshop.services import PORTS

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"
INFRASTRUCTURE = {
    "rabbitmq",
    "postgres",
    "redis",
    "provision",
    "smtp-sink",
    "prometheus",
    "console",
}


def services() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = document["services"]
    return found


def test_every_service_of_the_registry_has_its_container() -> None:
    found = services()
    assert set(found) == set(PORTS) | INFRASTRUCTURE
    for name in PORTS:
        assert found[name]["environment"]["EVENTSHOP_SERVICE"] == name
        assert found[name]["image"] == "${EVENTSHOP_IMAGE:-eventshop:dev}"


def test_only_the_gateway_uis_prometheus_and_the_mailbox_are_published_and_on_loopback() -> None:
    published = {name: spec["ports"] for name, spec in services().items() if "ports" in spec}
    assert set(published) == {"gateway", "rabbitmq", "prometheus", "smtp-sink", "console"}
    for ports in published.values():
        assert all(port.startswith("127.0.0.1:") for port in ports), ports


def test_no_password_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    for name, spec in services().items():
        for key, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in key or key.endswith(("_KEY", "_SECRET")):
                assert str(value).startswith("${"), (name, key)
    assert "secret" not in text.lower().replace("_secret", "")


def test_every_service_writes_its_spans_where_the_operators_trace_reads_them() -> None:
    found = services()
    for name in PORTS:
        trace_dir = found[name]["environment"]["EVENTSHOP_TRACE_DIR"]
        assert f"traces:{trace_dir}" in found[name]["volumes"], name
    assert "traces:/home/eventshop/traces:ro" in found["provision"]["volumes"]
