"""deploy/k8s/eventshop.yaml is current, valid against the Kubernetes API's schemas (checked
offline by kubernetes-validate, strict: no field the API does not know), and has a Deployment,
a Service and a PodDisruptionBudget for every service of the registry. No cluster runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from eventshop.services import PORTS
from eventshop.tooling.k8s import manifests_yaml

FILE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "eventshop.yaml"
DOCS: list[dict[str, Any]] = list(yaml.safe_load_all(FILE.read_text()))
#: the oldest Kubernetes the manifests are checked against (every API they use is GA there)
KUBERNETES = "1.29"


def test_the_manifests_are_current() -> None:
    assert FILE.read_text() == manifests_yaml(), (
        "stale: .venv/bin/eventshop k8s --output deploy/k8s/eventshop.yaml"
    )


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_each_manifest_is_valid_for_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_service_has_a_deployment_a_service_and_a_budget() -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        names = {d["metadata"]["name"] for d in DOCS if d["kind"] == kind}
        assert names == set(PORTS), kind


def test_every_deployment_is_probed_bounded_and_not_root() -> None:
    for doc in (d for d in DOCS if d["kind"] == "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        names = {e["name"] for e in container["env"]}
        assert {"EVENTSHOP_AMQP_URL", "EVENTSHOP_DATABASE_URL", "EVENTSHOP_INTERNAL_KEY"} <= names
        for entry in container["env"]:  # credentials only by reference to the Secret
            if entry["name"] != "EVENTSHOP_SERVICE":
                assert "valueFrom" in entry, entry
